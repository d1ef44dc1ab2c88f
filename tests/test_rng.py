"""Tests of the Philox-4x32-10 generator: spikeforge/rng.py against Random123's known answers,
and the C++/CUDA header spikeforge/templates/common/philox.h against rng.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import spikeforge
from spikeforge import rng

HEADER_DIR = Path(spikeforge.__file__).parent / "templates" / "common"
HEADER = HEADER_DIR / "philox.h"

# Known-answer vectors for philox4x32 with 10 rounds: (counter[4], key[2], expected[4]).
# The first three are the "philox4x32 10" lines of the kat_vectors file of the Random123
# distribution, as reproduced in DEShawResearch/Random123-Boost,
# libs/random/test/test_philox.cpp (commit 916db91ae4c6fd8324ef054a518851321ab41f91).
# The others are from the generated kat_vectors of girving/random123-manual,
# examples/kat_vectors (commit 61e8479252c42f0f8c0490dec55237d7c01bf509); they exercise
# single-bit counters and keys.
KAT_PHILOX4X32_10 = [
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000),
     (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF),
     (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ((0x00000001, 0x00000000, 0x00000000, 0x00000000), (0x00000001, 0x00000000),
     (0xAC08141B, 0xDFC5CCBE, 0x79C07A47, 0xA7F66093)),
    ((0x00000000, 0x00000000, 0x00000000, 0x80000000), (0x00000000, 0x80000000),
     (0xF7A0B371, 0xE51DC93D, 0x56CE135D, 0x1D4B5580)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0x00000000, 0xFFFFFFFF),
     (0x08F7720C, 0x845EE9E0, 0x502CCD3D, 0xA9A00E27)),
    ((0x452821E6, 0x38D01377, 0xBE5466CF, 0x34E90C6C), (0x00000000, 0x00000001),
     (0xAC87A8C1, 0xF240ABDB, 0xADD6C012, 0x68A32A78)),
]

# 32-bit words whose conversion to uniforms is checked in C++ as well (the extremes matter).
EDGE_WORDS = [0, 1, 0xFF, 0x100, 0x1FF, 0x200, 0x7FFFFFFF, 0x80000000, 0xFFFFFE00, 0xFFFFFFFF]

# ---------------------------------------------------------------------------------------
# Test driver: reads tagged lines from the file named by argv[1], answers one line each.
#   K c0 c1 c2 c3 k0 k1     -> K w0 w1 w2 w3                       (hex words)
#   C x                     -> C float_bits double_bits            (u32 -> uniform)
#   D seed e b s stream     -> D uf_bits ud_bits normal_f normal_d (normals as %a)
# Compiled by nvcc, it also runs the D lines through a kernel when a GPU is present and
# answers them again as G lines (or prints "NOGPU").
# ---------------------------------------------------------------------------------------
DRIVER = r"""
#include "philox.h"
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <vector>

static uint32_t fbits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
static uint64_t dbits(double d) { uint64_t u; std::memcpy(&u, &d, 8); return u; }

struct Draw { uint64_t seed; uint32_t e, b, s, st; };

#ifdef __CUDACC__
__global__ void draw_kernel(const Draw* in, int n, float* uf, double* ud, float* nf, double* nd) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const Draw d = in[i];
    uf[i] = sf_uniform_f(d.seed, d.e, d.b, d.s, d.st);
    ud[i] = sf_uniform_d(d.seed, d.e, d.b, d.s, d.st);
    nf[i] = sf_normal_f(d.seed, d.e, d.b, d.s, d.st);
    nd[i] = sf_normal_d(d.seed, d.e, d.b, d.s, d.st);
}

static void run_on_gpu(const std::vector<Draw>& draws) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) { std::printf("NOGPU\n"); return; }
    const int n = (int)draws.size();
    Draw* din; float *uf, *nf; double *ud, *nd;
    cudaMalloc(&din, n * sizeof(Draw));
    cudaMalloc(&uf, n * sizeof(float)); cudaMalloc(&nf, n * sizeof(float));
    cudaMalloc(&ud, n * sizeof(double)); cudaMalloc(&nd, n * sizeof(double));
    cudaMemcpy(din, draws.data(), n * sizeof(Draw), cudaMemcpyHostToDevice);
    draw_kernel<<<(n + 127) / 128, 128>>>(din, n, uf, ud, nf, nd);
    std::vector<float> huf(n), hnf(n); std::vector<double> hud(n), hnd(n);
    cudaMemcpy(huf.data(), uf, n * sizeof(float), cudaMemcpyDeviceToHost);
    cudaMemcpy(hud.data(), ud, n * sizeof(double), cudaMemcpyDeviceToHost);
    cudaMemcpy(hnf.data(), nf, n * sizeof(float), cudaMemcpyDeviceToHost);
    cudaMemcpy(hnd.data(), nd, n * sizeof(double), cudaMemcpyDeviceToHost);
    if (cudaGetLastError() != cudaSuccess) { std::printf("GPUERROR\n"); return; }
    for (int i = 0; i < n; ++i)
        std::printf("G %08" PRIx32 " %016" PRIx64 " %a %a\n", fbits(huf[i]), dbits(hud[i]),
                    (double)hnf[i], hnd[i]);
}
#endif

int main(int argc, char** argv) {
    if (argc != 2) return 2;
    FILE* f = std::fopen(argv[1], "r");
    if (!f) return 3;
    std::vector<Draw> draws;
    char tag[4];
    while (std::fscanf(f, "%3s", tag) == 1) {
        if (tag[0] == 'K') {
            uint32_t c[4], k[2];
            if (std::fscanf(f, "%" SCNx32 " %" SCNx32 " %" SCNx32 " %" SCNx32 " %" SCNx32 " %" SCNx32,
                            &c[0], &c[1], &c[2], &c[3], &k[0], &k[1]) != 6) return 4;
            sf_philox4 r = sf_philox4x32_10(c[0], c[1], c[2], c[3], k[0], k[1]);
            std::printf("K %08" PRIx32 " %08" PRIx32 " %08" PRIx32 " %08" PRIx32 "\n",
                        r.v[0], r.v[1], r.v[2], r.v[3]);
        } else if (tag[0] == 'C') {
            uint32_t x;
            if (std::fscanf(f, "%" SCNx32, &x) != 1) return 4;
            std::printf("C %08" PRIx32 " %016" PRIx64 "\n", fbits(sf_u32_to_uniform_float(x)),
                        dbits(sf_u32_to_uniform_double(x)));
        } else if (tag[0] == 'D') {
            Draw d;
            if (std::fscanf(f, "%" SCNx64 " %" SCNx32 " %" SCNx32 " %" SCNx32 " %" SCNx32,
                            &d.seed, &d.e, &d.b, &d.s, &d.st) != 5) return 4;
            draws.push_back(d);
            std::printf("D %08" PRIx32 " %016" PRIx64 " %a %a\n",
                        fbits(sf_uniform_f(d.seed, d.e, d.b, d.s, d.st)),
                        dbits(sf_uniform_d(d.seed, d.e, d.b, d.s, d.st)),
                        (double)sf_normal_f(d.seed, d.e, d.b, d.s, d.st),
                        sf_normal_d(d.seed, d.e, d.b, d.s, d.st));
        } else {
            return 5;
        }
    }
    std::fclose(f);
#ifdef __CUDACC__
    run_on_gpu(draws);
#endif
    return 0;
}
"""

# A __global__ kernel using every function of the header, for the compile-only nvcc check.
CUDA_KERNEL = r"""
#include "philox.h"

__global__ void sf_rng_smoke(unsigned long long seed, unsigned int n, unsigned int batch,
                             unsigned int step, float* uf, double* ud, float* nf, double* nd,
                             uint32_t* words) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const uint32_t stream = sf_stream_id(3u, 7u);
    uf[i] = sf_uniform_f(seed, i, batch, step, stream);
    ud[i] = sf_uniform_d(seed, i, batch, step, stream);
    nf[i] = sf_normal_f(seed, i, batch, step, sf_init_stream_id(3u, 1u));
    nd[i] = sf_normal_d(seed, i, batch, 0u, sf_init_stream_id(3u, 2u));
    sf_philox4 r = sf_philox4x32_10(i, batch, step, stream, 1u, 2u);
    words[4 * i + 0] = r.v[0] ^ sf_philox_draw(seed, i, batch, step, stream).v[1];
    words[4 * i + 1] = r.v[1];
    words[4 * i + 2] = r.v[2] + (uint32_t)(sf_u32_to_uniform_float(r.v[3]) > 0.5f);
    words[4 * i + 3] = r.v[3] + (uint32_t)(sf_u32_to_uniform_double(r.v[0]) > 0.5);
}
"""


def _find_tool(name: str, *extra: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for cand in extra:
        if os.access(cand, os.X_OK):
            return cand
    return None


GXX = _find_tool("g++", "/usr/bin/g++")
NVCC = _find_tool("nvcc", "/usr/local/cuda/bin/nvcc")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def _draw_tuples(n: int = 4000) -> list[tuple[int, int, int, int, int]]:
    """(seed, element, batch, step, stream) tuples: random ones plus edge values."""
    g = np.random.default_rng(20240607)
    seeds = [0, 1, 42, 0xFFFFFFFF, 0x100000000, 0xDEADBEEFCAFEF00D, 2**64 - 1]
    edge = [0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]
    out = []
    for s in seeds:
        for v in edge:
            out.append((s, v, v, v, v))
        out.append((s, 3, 0, 0, rng.init_stream_id(0x7FFF, 0xFFFF)))
    while len(out) < n:
        seed = int(g.integers(0, 2**64, dtype=np.uint64))
        e, b, s = (int(x) for x in g.integers(0, 2**32, size=3, dtype=np.uint64))
        if g.random() < 0.5:  # realistic small counters as well as arbitrary ones
            e, b, s = e % 10000, b % 16, s % 100000
        st = rng.stream_id(int(g.integers(0, 0x8000)), int(g.integers(0, 0x10000)))
        out.append((seed, e, b, s, st))
    return out


def _driver_input(path: Path, draws) -> None:
    lines = []
    for ctr, key, _ in KAT_PHILOX4X32_10:
        lines.append("K " + " ".join(f"{v:x}" for v in (*ctr, *key)))
    lines += [f"C {x:x}" for x in EDGE_WORDS]
    lines += ["D " + " ".join(f"{v:x}" for v in d) for d in draws]
    path.write_text("\n".join(lines) + "\n")


def _parse_driver(stdout: str):
    res = {"K": [], "C": [], "D": [], "G": [], "flags": []}
    for line in stdout.splitlines():
        parts = line.split()
        tag = parts[0]
        if tag == "K":
            res["K"].append(tuple(int(p, 16) for p in parts[1:]))
        elif tag == "C":
            res["C"].append((int(parts[1], 16), int(parts[2], 16)))
        elif tag in ("D", "G"):
            res[tag].append((int(parts[1], 16), int(parts[2], 16), float.fromhex(parts[3]),
                             float.fromhex(parts[4])))
        else:
            res["flags"].append(tag)
    return res


def _reference(draws):
    """rng.py's values for the draw tuples (seeds vectorised too)."""
    seed = np.array([d[0] for d in draws], dtype=np.uint64)
    e, b, s, st = np.array([d[1:] for d in draws], dtype=np.uint32).T
    return (
        rng.uniform(seed, e, b, s, st, dtype=np.float32),
        rng.uniform(seed, e, b, s, st, dtype=np.float64),
        rng.normal(seed, e, b, s, st, dtype=np.float32),
        rng.normal(seed, e, b, s, st, dtype=np.float64),
    )


def _check_against_reference(rows, draws, f_rtol: float, d_rtol: float) -> None:
    uf, ud, nf, nd = _reference(draws)
    got_uf = np.array([r[0] for r in rows], dtype=np.uint32).view(np.float32)
    got_ud = np.array([r[1] for r in rows], dtype=np.uint64).view(np.float64)
    got_nf = np.array([r[2] for r in rows], dtype=np.float64)
    got_nd = np.array([r[3] for r in rows], dtype=np.float64)
    np.testing.assert_array_equal(got_uf.view(np.uint32), uf.view(np.uint32))
    np.testing.assert_array_equal(got_ud.view(np.uint64), ud.view(np.uint64))
    # Box-Muller goes through log/sqrt/cos, whose last bit depends on the math library.
    np.testing.assert_allclose(got_nf, nf.astype(np.float64), rtol=f_rtol, atol=f_rtol * 1e-2)
    np.testing.assert_allclose(got_nd, nd, rtol=d_rtol, atol=d_rtol * 1e-2)


# ---------------------------------------------------------------------------------------
# (a) rng.py against Random123's known answers
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("ctr,key,expected", KAT_PHILOX4X32_10)
def test_kat_numpy(ctr, key, expected):
    out = rng.philox4x32_10(np.array(ctr, dtype=np.uint32), np.array(key, dtype=np.uint32))
    assert out.dtype == np.uint32
    assert out.shape == (4,)
    assert [int(v) for v in out] == list(expected)


def test_kat_numpy_vectorised_and_broadcast():
    ctrs = np.array([k[0] for k in KAT_PHILOX4X32_10], dtype=np.uint32)
    keys = np.array([k[1] for k in KAT_PHILOX4X32_10], dtype=np.uint32)
    expected = np.array([k[2] for k in KAT_PHILOX4X32_10], dtype=np.uint32)
    np.testing.assert_array_equal(rng.philox4x32_10(ctrs, keys), expected)
    # One key broadcast against a (2, n, 4) block of counters.
    block = np.stack([ctrs, ctrs])
    out = rng.philox4x32_10(block, keys[2])
    assert out.shape == (2, len(ctrs), 4)
    np.testing.assert_array_equal(out[1, 2], expected[2])
    # Python ints work too.
    assert rng.philox4x32_10([0, 0, 0, 0], [0, 0]).tolist() == list(KAT_PHILOX4X32_10[0][2])


def test_philox_draw_uses_stream_convention():
    seed = 0x299F31D0A4093822  # key (a4093822, 299f31d0) of the pi-digits vector
    ctr, _, expected = KAT_PHILOX4X32_10[2]
    out = rng.philox_draw(seed, *ctr)
    assert out.tolist() == list(expected)
    u = rng.uniform(seed, *ctr, dtype=np.float64)
    assert u == (expected[0] + 0.5) * 2.0**-32


def test_bad_arguments():
    with pytest.raises(ValueError):
        rng.philox4x32_10(np.zeros(3, np.uint32), np.zeros(2, np.uint32))
    with pytest.raises(ValueError):
        rng.philox4x32_10(np.zeros(4, np.uint32), np.zeros(3, np.uint32))
    with pytest.raises(ValueError):
        rng.uniform(-1, 0, 0, 0, 0)
    with pytest.raises(ValueError):
        rng.uniform(2**64, 0, 0, 0, 0)
    with pytest.raises(ValueError):
        rng.uniform([1, 2**64], 0, 0, 0, 0)
    with pytest.raises(TypeError):
        rng.uniform(1.5, 0, 0, 0, 0)
    with pytest.raises(ValueError):
        rng.uniform(1, -1, 0, 0, 0)
    with pytest.raises(ValueError):
        rng.uniform(1, 2**32, 0, 0, 0)
    with pytest.raises(TypeError):
        rng.uniform(1, 0.5, 0, 0, 0)
    with pytest.raises(ValueError):
        rng.uniform(1, 0, 0, 0, 0, dtype=np.float16)


# ---------------------------------------------------------------------------------------
# Conversions and stream ids
# ---------------------------------------------------------------------------------------


def test_uniform_conversions_open_interval():
    x = np.array(EDGE_WORDS, dtype=np.uint32)
    f = rng.u32_to_uniform_float(x)
    d = rng.u32_to_uniform_double(x)
    assert f.dtype == np.float32 and d.dtype == np.float64
    assert np.all(f > 0) and np.all(f < 1)
    assert np.all(d > 0) and np.all(d < 1)
    assert f[0] == np.float32(2.0**-24) and f[-1] == np.float32(1 - 2.0**-24)
    assert d[0] == 2.0**-33 and d[-1] == 1 - 2.0**-33
    # Float and double uniforms come from the same word and agree to half a float step.
    assert np.max(np.abs(f.astype(np.float64) - d)) <= 2.0**-24
    # Exhaustive over the top 23 bits: 2**23 distinct floats, symmetric about 1/2.
    top = np.arange(2**23, dtype=np.uint32) << np.uint32(9)
    fu = rng.u32_to_uniform_float(top)
    assert np.unique(fu).size == 2**23
    assert np.all((fu > 0) & (fu < 1))
    np.testing.assert_array_equal(fu + fu[::-1], np.ones_like(fu))


def test_stream_ids():
    assert rng.stream_id(0, 0) == 0
    assert rng.stream_id(3, 7) == (3 << 16) | 7
    assert rng.stream_id(0x7FFF, 0xFFFF) == 0x7FFFFFFF
    assert rng.init_stream_id(0, 0) == 0x80000000
    assert rng.init_stream_id(3, 2) == 0x80000000 | (3 << 16) | 2
    assert rng.init_stream_id(0x7FFF, 0xFFFF) == 0xFFFFFFFF
    ids = rng.stream_id(np.arange(4), np.array([[0], [1]]))
    assert ids.dtype == np.uint32 and ids.shape == (2, 4)
    assert ids[1, 2] == (2 << 16) | 1
    # Simulation and initialisation streams never collide.
    sim = rng.stream_id(np.arange(0, 0x8000, 97)[:, None], np.arange(0, 0x10000, 251)[None, :])
    ini = rng.init_stream_id(np.arange(0, 0x8000, 97)[:, None], np.arange(0, 0x10000, 251)[None, :])
    assert not np.intersect1d(sim.ravel(), ini.ravel()).size
    for bad in ((0x8000, 0), (-1, 0), (0, 0x10000), (0, -1)):
        with pytest.raises(ValueError):
            rng.stream_id(*bad)
        with pytest.raises(ValueError):
            rng.init_stream_id(*bad)


# ---------------------------------------------------------------------------------------
# (b) the header compiled by g++ against rng.py
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def draws():
    return _draw_tuples()


@pytest.fixture(scope="module")
def cpp_results(tmp_path_factory, draws):
    if GXX is None:
        pytest.skip("g++ not found")
    d = tmp_path_factory.mktemp("philox_cpp")
    (d / "driver.cpp").write_text(DRIVER)
    exe = d / "driver"
    _run([GXX, "-std=c++17", "-O2", "-Wall", "-Wextra", "-Wpedantic", "-Werror", f"-I{HEADER_DIR}",
          str(d / "driver.cpp"), "-o", str(exe), "-lm"])
    _driver_input(d / "input.txt", draws)
    return _parse_driver(_run([str(exe), str(d / "input.txt")]).stdout)


def test_header_exists_and_is_self_contained():
    text = HEADER.read_text()
    includes = [ln.split()[1] for ln in text.splitlines() if ln.startswith("#include")]
    assert sorted(includes) == ["<math.h>", "<stdint.h>"]
    for name in ("sf_philox4x32_10", "sf_u32_to_uniform_float", "sf_u32_to_uniform_double",
                 "sf_uniform_f", "sf_uniform_d", "sf_normal_f", "sf_normal_d", "SF_HOSTDEV"):
        assert name in text


def test_cpp_kat(cpp_results):
    assert cpp_results["K"] == [tuple(k[2]) for k in KAT_PHILOX4X32_10]


def test_cpp_conversions(cpp_results):
    x = np.array(EDGE_WORDS, dtype=np.uint32)
    f_bits = rng.u32_to_uniform_float(x).view(np.uint32)
    d_bits = rng.u32_to_uniform_double(x).view(np.uint64)
    assert cpp_results["C"] == [(int(a), int(b)) for a, b in zip(f_bits, d_bits, strict=True)]


def test_cpp_draws_match_numpy(cpp_results, draws):
    rows = cpp_results["D"]
    assert len(rows) == len(draws)
    _check_against_reference(rows, draws, f_rtol=1e-6, d_rtol=1e-12)


# ---------------------------------------------------------------------------------------
# (c) the header under nvcc
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nvcc():
    if NVCC is None:
        pytest.skip("nvcc not found")
    return NVCC


def test_nvcc_compiles_kernel(nvcc, tmp_path):
    src = tmp_path / "philox_smoke.cu"
    src.write_text(CUDA_KERNEL)
    obj = tmp_path / "philox_smoke.o"
    _run([nvcc, "-x", "cu", "-c", "-arch=sm_80", "-std=c++17", f"-I{HEADER_DIR}", str(src), "-o", str(obj)])
    assert obj.stat().st_size > 0


@pytest.fixture(scope="module")
def nvcc_results(nvcc, tmp_path_factory, draws):
    d = tmp_path_factory.mktemp("philox_cuda")
    (d / "driver.cu").write_text(DRIVER)
    exe = d / "driver"
    _run([nvcc, "-x", "cu", "-arch=sm_80", "-std=c++17", f"-I{HEADER_DIR}", str(d / "driver.cu"),
          "-o", str(exe)])
    _driver_input(d / "input.txt", draws)
    return _parse_driver(_run([str(exe), str(d / "input.txt")]).stdout)


def test_nvcc_host_side_matches_numpy(nvcc_results, draws):
    """The __host__ __device__ functions, compiled by nvcc and run on the host."""
    assert nvcc_results["K"] == [tuple(k[2]) for k in KAT_PHILOX4X32_10]
    _check_against_reference(nvcc_results["D"], draws, f_rtol=1e-6, d_rtol=1e-12)


@pytest.mark.gpu
def test_gpu_draws_match_numpy(nvcc_results, draws):
    """The same draws made by a CUDA kernel: uniforms bit for bit, normals to CUDA's libm."""
    if "NOGPU" in nvcc_results["flags"]:
        pytest.skip("no CUDA GPU")
    assert "GPUERROR" not in nvcc_results["flags"]
    # CUDA's logf/cosf are within 1-2 ulp, log/cos within 1-2 ulp in double.
    _check_against_reference(nvcc_results["G"], draws, f_rtol=2e-6, d_rtol=1e-12)


# ---------------------------------------------------------------------------------------
# (d) statistical sanity and stream independence (numpy reference)
# ---------------------------------------------------------------------------------------

N_STAT = 100_000


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uniform_statistics(dtype):
    u = rng.uniform(1234, np.arange(N_STAT), 0, 0, rng.stream_id(0, 0), dtype=dtype)
    assert u.dtype == dtype and u.shape == (N_STAT,)
    assert np.all((u > 0) & (u < 1))
    assert abs(u.mean() - 0.5) < 0.01
    assert abs(u.var() - 1 / 12) < 0.005
    hist, _ = np.histogram(u, bins=10, range=(0, 1))
    assert np.all(np.abs(hist - N_STAT / 10) < 5 * np.sqrt(N_STAT / 10))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normal_statistics(dtype):
    z = rng.normal(1234, np.arange(N_STAT), 3, 17, rng.stream_id(1, 2), dtype=dtype)
    assert z.dtype == dtype and z.shape == (N_STAT,)
    assert np.all(np.isfinite(z))
    assert abs(z.mean()) < 0.02
    assert abs(z.std() - 1) < 0.02
    assert abs(np.mean(z**3)) < 0.05  # skewness
    assert abs(np.mean(z**4) - 3) < 0.1  # kurtosis
    assert abs(np.mean(np.abs(z) < 1) - 0.6827) < 0.01


def test_counters_give_different_numbers():
    e = np.arange(1000)
    base = rng.uniform(7, e, 0, 0, rng.stream_id(0, 0))
    variants = {
        "batch": rng.uniform(7, e, 1, 0, rng.stream_id(0, 0)),
        "step": rng.uniform(7, e, 0, 1, rng.stream_id(0, 0)),
        "call_site": rng.uniform(7, e, 0, 0, rng.stream_id(0, 1)),
        "population": rng.uniform(7, e, 0, 0, rng.stream_id(1, 0)),
        "init": rng.uniform(7, e, 0, 0, rng.init_stream_id(0, 0)),
        "seed": rng.uniform(8, e, 0, 0, rng.stream_id(0, 0)),
        "seed_high_word": rng.uniform(7 + 2**32, e, 0, 0, rng.stream_id(0, 0)),
    }
    assert np.unique(base).size > 990
    for name, v in variants.items():
        assert np.mean(v == base) < 0.01, name
        assert abs(np.corrcoef(v, base)[0, 1]) < 0.15, name
    # Broadcasting over (batch, element) gives distinct numbers per batch.
    grid = rng.uniform(7, e[None, :], np.arange(4)[:, None], 0, 0)
    assert grid.shape == (4, 1000)
    np.testing.assert_array_equal(grid[0], base)
    assert np.unique(grid).size > 3950


def test_seed_arrays_broadcast():
    seeds = [0, 5, 2**32, 2**64 - 1]
    per_seed = np.stack([rng.uniform(s, np.arange(10), 1, 2, 3, dtype=np.float64) for s in seeds])
    from_lists = rng.uniform([[s] for s in seeds], np.arange(10), 1, 2, 3, dtype=np.float64)
    from_array = rng.uniform(np.array(seeds, dtype=np.uint64)[:, None], np.arange(10), 1, 2, 3,
                             dtype=np.float64)
    np.testing.assert_array_equal(from_lists, per_seed)
    np.testing.assert_array_equal(from_array, per_seed)


def test_draws_are_reproducible_and_elementwise():
    e = np.arange(50)
    a = rng.normal(99, e, 2, 5, 11, dtype=np.float64)
    b = np.array([rng.normal(99, int(i), 2, 5, 11, dtype=np.float64) for i in e])
    np.testing.assert_array_equal(a, b)
    # The double uniform is exactly (w + 0.5) * 2**-32 of word 0.
    w = int(rng.philox_draw(99, 3, 2, 5, 11)[0])
    assert rng.uniform(99, 3, 2, 5, 11, dtype=np.float64) == (w + 0.5) * 2.0**-32
