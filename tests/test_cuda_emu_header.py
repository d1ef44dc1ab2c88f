"""Tests of spikeforge/templates/cuda/sf_cuda_emu.h, the header that lets g++ compile and run
CUDA kernel source unchanged on the CPU ("cuda-emu").

Every kernel below is real CUDA (``extern "C" __global__``, no ``<<< >>>``): a tiny C++ driver
includes the emulator header, then the .cu file, launches through ``sf_emu::launch`` /
``SF_EMU_LAUNCH`` and prints results.  The same kernel files are also compiled with
``nvcc -cubin`` when nvcc is installed, proving the text is valid CUDA.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEADER = REPO / "spikeforge" / "templates" / "cuda" / "sf_cuda_emu.h"
GXX = shutil.which("g++")

pytestmark = pytest.mark.skipif(GXX is None, reason="needs g++")


def nvcc_path() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    return "/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None


def build(tmp_path: Path, kernels: str, driver: str, *, openmp: bool = True, extra=()) -> Path:
    """Write kernels.cu and a driver that includes the header and it; compile; return the binary."""
    (tmp_path / "kernels.cu").write_text(kernels)
    (tmp_path / "driver.cpp").write_text(
        '#include "sf_cuda_emu.h"\n#include "kernels.cu"\n#include <cstdio>\n#include <vector>\n\n' + driver
    )
    exe = tmp_path / ("driver_omp" if openmp else "driver_serial")
    cmd = [GXX, "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{HEADER.parent}", *extra]
    if openmp:  # every multi-block launch then runs on an OpenMP team, however small
        cmd += ["-fopenmp", "-DSF_EMU_MIN_PARALLEL_THREADS=1"]
    cmd += [str(tmp_path / "driver.cpp"), "-o", str(exe)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr}"
    return exe


def run(exe: Path, *args: str, check: bool = True, threads: int | None = None):
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    res = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120, env=env)
    if check:
        assert res.returncode == 0, f"rc={res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    return res


def ints(line: str) -> list[int]:
    return [int(x) for x in line.split()]


# ---------------------------------------------------------------------------
# kernel sources (all of them are compiled by nvcc as well, see test_kernels_are_valid_cuda)
# ---------------------------------------------------------------------------

REDUCE_CU = r"""
#include <stdint.h>
// per-block tree reduction in shared memory, then one atomicAdd per block
extern "C" __global__ void __launch_bounds__(128) block_sum(const int* __restrict__ in, int* __restrict__ partial,
                                                            int* total, int n) {
    __shared__ int s[128];
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    s[threadIdx.x] = i < (unsigned)n ? in[i] : 0;
    __syncthreads();
    for (unsigned stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) s[threadIdx.x] += s[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        partial[blockIdx.x] = s[0];
        atomicAdd(total, s[0]);
    }
}
"""

COMPACT_CU = r"""
#include <stdint.h>
// block-level stream compaction: shared list + shared counter, one global atomic per block
extern "C" __global__ void __launch_bounds__(256) compact(const uint32_t* __restrict__ in, uint32_t n,
                                                          uint32_t* __restrict__ out, uint32_t* count) {
    __shared__ uint32_t sh_idx[256];
    __shared__ uint32_t sh_cnt;
    __shared__ uint32_t sh_base;
    if (threadIdx.x == 0) sh_cnt = 0;
    __syncthreads();
    const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && in[i] % 3u == 0u) sh_idx[atomicAdd(&sh_cnt, 1u)] = i;
    __syncthreads();
    if (threadIdx.x == 0) sh_base = atomicAdd(count, sh_cnt);
    __syncthreads();
    if (threadIdx.x < sh_cnt) out[sh_base + threadIdx.x] = sh_idx[threadIdx.x];
}
"""

ATOMICS_CU = r"""
// float/double atomicAdd from many blocks at once; the other atomics on one word each
extern "C" __global__ void add_float(float* fsum, double* dsum, const float* __restrict__ vals) {
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(fsum, vals[i]);
    atomicAdd(dsum, (double)vals[i]);
}
extern "C" __global__ void misc_atomics(int* imax, int* imin, unsigned* umax, unsigned* bits, unsigned* andw,
                                        unsigned long long* ull, unsigned* inc, int* sub, int* cas_wins,
                                        int* lock) {
    const int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    atomicMax(imax, i - 1000);
    atomicMin(imin, 1000 - i);
    atomicMax(umax, (unsigned)i * 3u);
    atomicOr(&bits[i / 32], 1u << (i % 32));
    atomicAnd(andw, ~(1u << (i % 32)));
    atomicAdd(ull, 1ull << 33);
    atomicInc(inc, 99u);  // wraps to 0 after 99
    atomicSub(sub, 2);
    if (atomicCAS(lock, 0, i + 1) == 0) atomicAdd(cas_wins, 1);
    atomicExch(lock, 0);
    __threadfence();
}
"""

WARP_CU = r"""
// warp-level reduction with shuffles; votes with ballot + popc
extern "C" __global__ void warp_sum(const float* __restrict__ in, float* __restrict__ warp_out,
                                    unsigned* __restrict__ ballot_out, int* __restrict__ lanes_out) {
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    const int lane = threadIdx.x % warpSize;
    float v = in[i];
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
    const unsigned odd = __ballot_sync(0xffffffffu, ((int)in[i]) & 1);
    int up = __shfl_up_sync(0xffffffffu, lane, 1);          // lane - 1 (lane 0 keeps 0)
    int x = __shfl_xor_sync(0xffffffffu, lane, 1);          // neighbour in the pair
    int bcast = __shfl_sync(0xffffffffu, lane * 7, 3);      // lane 3's value everywhere
    int seg = __shfl_sync(0xffffffffu, lane, 0, 8);         // first lane of each 8-lane segment
    const int any = __any_sync(0xffffffffu, lane == 17), all = __all_sync(0xffffffffu, lane < 32);
    if (lane == 0) {
        warp_out[i / 32] = v;
        ballot_out[i / 32] = (unsigned)__popc(odd);
    }
    lanes_out[i * 5 + 0] = up;
    lanes_out[i * 5 + 1] = x;
    lanes_out[i * 5 + 2] = bcast;
    lanes_out[i * 5 + 3] = seg;
    lanes_out[i * 5 + 4] = any * 10 + all;
}
// a partial last warp (48 threads) and partial masks
extern "C" __global__ void partial_masks(int* __restrict__ out) {
    const int lane = threadIdx.x & 31;
    int r = -1;
    if (lane < 16) {
        r = __shfl_sync(0x0000ffffu, lane * 10, 15 - lane) + (int)__reduce_add_sync(0x0000ffffu, 1u);
    } else {
        __syncwarp(0xffff0000u);
        r = (int)__popc(__ballot_sync(0xffff0000u, lane & 1));
    }
    out[threadIdx.x] = r + 1000 * (int)__popc(__ballot_sync(0xffffffffu, 1));
}
"""

GRID2D_CU = r"""
// 2D grid: blockIdx.y / gridDim.y select the batch instance; 2D blocks
extern "C" __global__ void __launch_bounds__(64) batch_sums(const float* __restrict__ x, int n,
                                                            float* __restrict__ sums, int* __restrict__ meta) {
    __shared__ float s[64];
    const int b = blockIdx.y;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    s[threadIdx.x] = i < n ? x[(size_t)b * n + i] : 0.0f;
    __syncthreads();
    for (unsigned stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) s[threadIdx.x] += s[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0) atomicAdd(&sums[b], s[0]);
    if (threadIdx.x == 0 && blockIdx.x == 0) meta[b] = (int)(gridDim.y * 100 + gridDim.x);
}
extern "C" __global__ void tile2d(int* out) {
    __shared__ int t[4][8];
    t[threadIdx.y][threadIdx.x] = (int)(threadIdx.y * 8 + threadIdx.x);
    __syncthreads();
    const int flat = (int)((blockIdx.y * gridDim.x + blockIdx.x) * 32 + threadIdx.y * 8 + threadIdx.x);
    out[flat] = t[3 - threadIdx.y][7 - threadIdx.x] + 100 * (int)blockIdx.x + 1000 * (int)blockIdx.y;
}
"""

TIMING_CU = r"""
// two barriers per thread: the fiber path's cost per CUDA thread
extern "C" __global__ void __launch_bounds__(256) rotate(const float* __restrict__ in, float* __restrict__ out) {
    __shared__ float s[256];
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    s[threadIdx.x] = in[i];
    __syncthreads();
    const float v = s[(threadIdx.x + 1) % blockDim.x];
    __syncthreads();
    s[threadIdx.x] = 2.0f * v;
    out[i] = v + s[threadIdx.x];
}
extern "C" __global__ void axpy(const float* __restrict__ in, float* __restrict__ out) {
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    out[i] = 2.0f * in[i] + 1.0f;
}
"""

MISC_CU = r"""
// dynamic shared memory, early return before a barrier, math helpers
extern "C" __global__ void reverse_dyn(const float* __restrict__ in, float* __restrict__ out) {
    extern __shared__ __align__(16) unsigned char sf_dynamic_shared[];
    float* buf = reinterpret_cast<float*>(sf_dynamic_shared);
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    buf[threadIdx.x] = in[i];
    __syncthreads();
    out[i] = buf[blockDim.x - 1 - threadIdx.x];
}
extern "C" __global__ void early_exit(int* out) {
    __shared__ int cnt;
    if (threadIdx.x == 0) cnt = 0;
    __syncthreads();
    if (threadIdx.x >= 40) return;
    atomicAdd(&cnt, 1);
    __syncthreads();
    if (threadIdx.x == 0) out[blockIdx.x] = cnt;
}
extern "C" __global__ void mathx(float* f, int* k) {
    f[0] = __expf(0.0f) + __fdividef(1.0f, 4.0f) + rsqrtf(4.0f) + __saturatef(3.0f) + fminf(2.0f, 3.0f);
    f[1] = __int_as_float(__float_as_int(1.5f)) + min(2.5f, 7.0f) + max(-1.0f, 0.5f);
    k[0] = __float2int_rn(2.5f) * 100 + __float2int_rn(3.5f) * 10 + __float2int_rz(-1.7f);
    k[1] = __ffs(8) * 100 + __clz(1) + (int)__popc(0xf0f0u) * 1000;
    k[2] = min(3, -4) * 10 + (int)max(3u, 9u);
}
"""

DEADLOCK_CU = r"""
// thread 3 waits at __syncthreads while its warp waits in a shuffle: nothing can run
extern "C" __global__ void deadlock(int* out) {
    if (threadIdx.x == 3) __syncthreads();
    else out[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0);
}
extern "C" __global__ void needs_barrier(int* out) {
    out[threadIdx.x] = 1;
    __syncthreads();
}
"""

ALL_KERNELS = {
    "reduce": REDUCE_CU,
    "compact": COMPACT_CU,
    "atomics": ATOMICS_CU,
    "warp": WARP_CU,
    "grid2d": GRID2D_CU,
    "timing": TIMING_CU,
    "misc": MISC_CU,
    "deadlock": DEADLOCK_CU,
}


# ---------------------------------------------------------------------------
# (1) shared-memory tree reduction
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("openmp", [True, False], ids=["openmp", "serial"])
def test_block_reduction_with_syncthreads(tmp_path, openmp):
    driver = r"""
int main() {
    const int n = 1024, blocks = 8;
    std::vector<int> in(n), partial(blocks, -1);
    for (int i = 0; i < n; i++) in[i] = (i * 37) % 101 - 50;
    int total = 0;
    SF_EMU_LAUNCH(block_sum, dim3(blocks), dim3(128), true, in.data(), partial.data(), &total, n);
    for (int b = 0; b < blocks; b++) printf("%d ", partial[b]);
    printf("\n%d\n", total);
    // the raw launch API, twice in a row (fibers and stacks are reused)
    for (int rep = 0; rep < 2; rep++) {
        int t2 = 0;
        const int* pin = in.data();
        int* pp = partial.data();
        sf_emu::launch(dim3(blocks), dim3(128), 0, true, [&] { block_sum(pin, pp, &t2, n); });
        printf("%d ", t2);
    }
    printf("\n");
}
"""
    exe = build(tmp_path, REDUCE_CU, driver, openmp=openmp)
    lines = run(exe).stdout.splitlines()
    vals = [(i * 37) % 101 - 50 for i in range(1024)]
    expected = [sum(vals[b * 128 : (b + 1) * 128]) for b in range(8)]
    assert ints(lines[0]) == expected
    assert int(lines[1]) == sum(vals)
    assert ints(lines[2]) == [sum(vals)] * 2


# ---------------------------------------------------------------------------
# (2) block-level stream compaction
# ---------------------------------------------------------------------------


def test_stream_compaction(tmp_path):
    driver = r"""
int main() {
    const uint32_t n = 5000;  // not a multiple of the block size
    std::vector<uint32_t> in(n), out(n, 0xffffffffu);
    for (uint32_t i = 0; i < n; i++) in[i] = i * 7u + (i % 5u);
    uint32_t count = 0;
    SF_EMU_LAUNCH(compact, dim3((n + 255) / 256), dim3(256), true, in.data(), n, out.data(), &count);
    printf("%u\n", count);
    for (uint32_t k = 0; k < count; k++) printf("%u ", out[k]);
    printf("\n");
}
"""
    exe = build(tmp_path, COMPACT_CU, driver)
    for threads in (1, 2, 4):
        lines = run(exe, threads=threads).stdout.splitlines()
        expected = {i for i in range(5000) if (i * 7 + i % 5) % 3 == 0}
        count = int(lines[0])
        got = ints(lines[1])
        assert count == len(expected) == len(got)
        assert set(got) == expected


# ---------------------------------------------------------------------------
# (3) float atomics from parallel blocks
# ---------------------------------------------------------------------------


def test_float_atomic_add_is_exact_across_threads(tmp_path):
    driver = r"""
int main() {
    const int blocks = 512, threads = 128, n = blocks * threads;
    std::vector<float> vals(n);
    for (int i = 0; i < n; i++) vals[i] = (float)(i % 4);  // integers: every partial sum is exact
    float fsum = 0.0f;
    double dsum = 0.0;
    SF_EMU_LAUNCH(add_float, blocks, threads, false, &fsum, &dsum, vals.data());
    printf("%.1f %.1f\n", fsum, dsum);

    const int nb = 40, nt = 64, m = nb * nt;
    int imax = -(1 << 30), imin = 1 << 30, sub = 0, wins = 0, lock = 0;
    unsigned umax = 0, andw = 0xffffffffu, inc = 0;
    std::vector<unsigned> bits(m / 32, 0);
    unsigned long long ull = 0;
    SF_EMU_LAUNCH(misc_atomics, nb, nt, false, &imax, &imin, &umax, bits.data(), &andw, &ull, &inc, &sub, &wins,
                  &lock);
    unsigned all_bits = 0xffffffffu;
    for (unsigned w : bits) all_bits &= w;
    printf("%d %d %u %x %u %llu %u %d %d %d\n", imax, imin, umax, all_bits, andw, ull, inc, sub, wins, lock);
}
"""
    exe = build(tmp_path, ATOMICS_CU, driver)
    n = 512 * 128
    exact = sum(i % 4 for i in range(n))
    for threads in (2, 4):
        lines = run(exe, threads=threads).stdout.splitlines()
        fsum, dsum = (float(x) for x in lines[0].split())
        assert fsum == exact and dsum == exact
        m = 40 * 64
        imax, imin, umax, all_bits, andw, ull, inc, sub, wins, lock = lines[1].split()
        assert int(imax) == m - 1 - 1000 and int(imin) == 1000 - (m - 1)
        assert int(umax) == 3 * (m - 1)
        assert all_bits == "ffffffff" and int(andw) == 0
        assert int(ull) == m << 33
        assert int(inc) == m % 100
        assert int(sub) == -2 * m
        assert 1 <= int(wins) <= m and int(lock) == 0


# ---------------------------------------------------------------------------
# (4) warp shuffles and votes
# ---------------------------------------------------------------------------


def test_warp_shuffle_reduction_and_ballot(tmp_path):
    driver = r"""
int main() {
    const int blocks = 4, threads = 256, n = blocks * threads;
    std::vector<float> in(n), warp_out(n / 32);
    std::vector<unsigned> ballots(n / 32);
    std::vector<int> lanes(n * 5);
    for (int i = 0; i < n; i++) in[i] = (float)((i * 13) % 17);
    SF_EMU_LAUNCH(warp_sum, blocks, threads, true, in.data(), warp_out.data(), ballots.data(), lanes.data());
    for (int w = 0; w < n / 32; w++) printf("%.0f ", warp_out[w]);
    printf("\n");
    for (int w = 0; w < n / 32; w++) printf("%u ", ballots[w]);
    printf("\n");
    for (int i = 0; i < 64 * 5; i++) printf("%d ", lanes[i]);
    printf("\n");
    std::vector<int> pm(48);
    SF_EMU_LAUNCH(partial_masks, 1, 48, true, pm.data());
    for (int v : pm) printf("%d ", v);
    printf("\n");
}
"""
    exe = build(tmp_path, WARP_CU, driver)
    lines = run(exe).stdout.splitlines()
    n = 4 * 256
    vals = [(i * 13) % 17 for i in range(n)]
    assert ints(lines[0]) == [sum(vals[w * 32 : (w + 1) * 32]) for w in range(n // 32)]
    assert ints(lines[1]) == [sum(v & 1 for v in vals[w * 32 : (w + 1) * 32]) for w in range(n // 32)]
    got = ints(lines[2])
    for i in range(64):
        lane = i % 32
        up, x, bcast, seg, votes = got[i * 5 : i * 5 + 5]
        assert up == (lane - 1 if lane > 0 else 0)
        assert x == lane ^ 1
        assert bcast == 21
        assert seg == lane & ~7
        assert votes == 11
    pm = ints(lines[3])
    # warp 0: lanes 0..15 shuffle among themselves (+16 from the reduction), lanes 16..31 vote
    # (8 odd lanes); the full-warp ballot counts 32 lanes in warp 0 and the 16 existing lanes in warp 1.
    for t in range(48):
        lane = t % 32
        base = 32000 if t < 32 else 16000
        assert pm[t] == base + ((15 - lane) * 10 + 16 if lane < 16 else 8), t


# ---------------------------------------------------------------------------
# (5) the very same kernel text is valid CUDA
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ALL_KERNELS))
def test_kernels_are_valid_cuda(tmp_path, name):
    nvcc = nvcc_path()
    if nvcc is None:
        pytest.skip("nvcc not found")
    src = tmp_path / f"{name}.cu"
    src.write_text(ALL_KERNELS[name])
    out = tmp_path / f"{name}.cubin"
    res = subprocess.run(
        [nvcc, "-arch=sm_80", "-cubin", "-o", str(out), str(src)], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    assert out.stat().st_size > 0


def test_header_refuses_nvcc(tmp_path):
    nvcc = nvcc_path()
    if nvcc is None:
        pytest.skip("nvcc not found")
    src = tmp_path / "k.cu"
    src.write_text(REDUCE_CU)
    res = subprocess.run(
        [nvcc, "-arch=sm_80", "-cubin", "-include", str(HEADER), "-o", str(tmp_path / "k.cubin"), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode != 0
    assert "must not be compiled by nvcc" in res.stderr + res.stdout


# ---------------------------------------------------------------------------
# (6) timing (printed, not asserted)
# ---------------------------------------------------------------------------


def test_timing_per_thread(tmp_path, capsys):
    driver = r"""
#include <chrono>
template <class F> double seconds(F f, int reps) {
    f();  // warm up: fibers, stacks, OpenMP threads
    auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; r++) f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
}
int main() {
    const int blocks = 64, threads = 256, n = blocks * threads;
    std::vector<float> in(n), out(n);
    for (int i = 0; i < n; i++) in[i] = (float)i;
    const double fib = seconds([&] { SF_EMU_LAUNCH(rotate, blocks, threads, true, in.data(), out.data()); }, 10);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        const int b = i / threads, t = i % threads;
        bad += out[i] != 3.0f * in[b * threads + (t + 1) % threads];
    }
    const double fast = seconds([&] { SF_EMU_LAUNCH(axpy, blocks, threads, false, in.data(), out.data()); }, 50);
    printf("%d %.4f %.5f\n", bad, fib / n * 1e6, fast / n * 1e6);
}
"""
    exe = build(tmp_path, TIMING_CU, driver, extra=("-O2",))
    results = {}
    for threads in (1, None):
        bad, fib_us, fast_us = run(exe, threads=threads).stdout.split()
        assert int(bad) == 0
        results[threads] = (float(fib_us), float(fast_us))
    with capsys.disabled():
        for threads, (fib_us, fast_us) in results.items():
            label = "1 OpenMP thread" if threads == 1 else f"{os.cpu_count()} OpenMP threads"
            print(
                f"\n[cuda-emu timing, {label}] 64x256 threads: fibers + 2 barriers {fib_us:.3f} us/thread, "
                f"fast path {fast_us:.4f} us/thread"
            )


# ---------------------------------------------------------------------------
# (7) 2D grids (batch on blockIdx.y) and 2D blocks
# ---------------------------------------------------------------------------


def test_2d_grid_batches(tmp_path):
    driver = r"""
int main() {
    const int n = 300, batch = 3;
    std::vector<float> x((size_t)batch * n), sums(batch, 0.0f);
    std::vector<int> meta(batch, 0);
    for (int b = 0; b < batch; b++)
        for (int i = 0; i < n; i++) x[(size_t)b * n + i] = (float)((b + 1) * (i % 10));
    SF_EMU_LAUNCH(batch_sums, dim3((n + 63) / 64, batch), dim3(64), true, x.data(), n, sums.data(), meta.data());
    for (int b = 0; b < batch; b++) printf("%.0f %d ", sums[b], meta[b]);
    printf("\n");
    std::vector<int> out(6 * 32);
    SF_EMU_LAUNCH(tile2d, dim3(3, 2), dim3(8, 4), true, out.data());
    for (int v : out) printf("%d ", v);
    printf("\n");
}
"""
    exe = build(tmp_path, GRID2D_CU, driver)
    lines = run(exe).stdout.splitlines()
    got = ints(lines[0])
    per = sum(i % 10 for i in range(300))
    assert got == [v for b in range(3) for v in ((b + 1) * per, 3 * 100 + 5)]  # gridDim = (5, 3)
    out = ints(lines[1])
    for by in range(2):
        for bx in range(3):
            for ty in range(4):
                for tx in range(8):
                    flat = (by * 3 + bx) * 32 + ty * 8 + tx
                    assert out[flat] == (3 - ty) * 8 + (7 - tx) + 100 * bx + 1000 * by


# ---------------------------------------------------------------------------
# more: dynamic shared memory, early exit, math helpers, -include build, misuse
# ---------------------------------------------------------------------------


def test_dynamic_shared_early_exit_and_math(tmp_path):
    driver = r"""
int main() {
    const int blocks = 5, threads = 96;
    std::vector<float> in(blocks * threads), out(blocks * threads);
    for (int i = 0; i < blocks * threads; i++) in[i] = (float)i;
    SF_EMU_LAUNCH_SHARED(reverse_dyn, blocks, threads, threads * sizeof(float), true, in.data(), out.data());
    int bad = 0;
    for (int i = 0; i < blocks * threads; i++) bad += out[i] != in[(i / threads) * threads + threads - 1 - i % threads];
    printf("%d\n", bad);
    std::vector<int> cnt(3);
    SF_EMU_LAUNCH(early_exit, 3, 64, true, cnt.data());
    printf("%d %d %d\n", cnt[0], cnt[1], cnt[2]);
    float f[2];
    int k[3];
    SF_EMU_LAUNCH(mathx, 1, 1, false, f, k);
    printf("%.4f %.4f %d %d %d\n", f[0], f[1], k[0], k[1], k[2]);
}
"""
    exe = build(tmp_path, MISC_CU, driver)
    lines = run(exe).stdout.splitlines()
    assert lines[0] == "0"
    # threads that returned no longer count at the second barrier
    assert ints(lines[1]) == [40, 40, 40]
    f0, f1, k0, k1, k2 = lines[2].split()
    assert float(f0) == pytest.approx(1 + 0.25 + 0.5 + 1 + 2)
    assert float(f1) == pytest.approx(1.5 + 2.5 + 0.5)
    assert int(k0) == 2 * 100 + 4 * 10 - 1  # round half to even, truncation toward zero
    assert int(k1) == 4 * 100 + 31 + 8 * 1000
    assert int(k2) == -40 + 9


def test_separate_compilation_with_include_flag(tmp_path):
    """The cuda-emu build: the .cu compiled as C++ with -include, linked with a host driver."""
    (tmp_path / "kernels.cu").write_text(REDUCE_CU)
    (tmp_path / "host.cpp").write_text(
        r"""
#include "sf_cuda_emu.h"
#include <cstdio>
extern "C" void block_sum(const int*, int*, int*, int);
int main() {
    static int in[1000], partial[8];
    for (int i = 0; i < 1000; i++) in[i] = i;
    int total = 0;
    SF_EMU_LAUNCH(block_sum, 8, 128, true, in, partial, &total, 1000);
    printf("%d %d\n", partial[7], total);
}
"""
    )
    flags = ["-std=c++17", "-O2", "-fopenmp", "-Wall", "-Wextra", "-Werror"]
    obj = tmp_path / "kernels.o"
    cmds = [
        [
            GXX,
            *flags,
            "-fPIC",
            "-include",
            str(HEADER),
            "-x",
            "c++",
            "-c",
            str(tmp_path / "kernels.cu"),
            "-o",
            str(obj),
        ],
        [GXX, *flags, f"-I{HEADER.parent}", str(tmp_path / "host.cpp"), str(obj), "-o", str(tmp_path / "host")],
    ]
    for cmd in cmds:
        res = subprocess.run(cmd, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
    assert run(tmp_path / "host").stdout.split() == [str(sum(range(896, 1000))), str(sum(range(1000)))]


def test_misuse_aborts_with_a_message(tmp_path):
    driver = r"""
#include <cstring>
int main(int argc, char** argv) {
    static int out[64];
    if (argc > 1 && !strcmp(argv[1], "deadlock")) SF_EMU_LAUNCH(deadlock, 1, 64, true, out);
    if (argc > 1 && !strcmp(argv[1], "fast")) SF_EMU_LAUNCH(needs_barrier, 1, 64, false, out);
    if (argc > 1 && !strcmp(argv[1], "config")) SF_EMU_LAUNCH(needs_barrier, 1, 2048, true, out);
    if (argc > 1 && !strcmp(argv[1], "ok")) SF_EMU_LAUNCH(needs_barrier, 1, 1, false, out);  // 1 thread: fine
    printf("done\n");
}
"""
    exe = build(tmp_path, DEADLOCK_CU, driver)
    res = run(exe, "deadlock", check=False)
    assert res.returncode != 0 and "deadlock in block (0,0,0)" in res.stderr
    assert re.search(r"wait in __shfl_sync with mask 0xffffffff", res.stderr)
    res = run(exe, "fast", check=False)
    assert res.returncode != 0 and "uses_barriers=false" in res.stderr
    res = run(exe, "config", check=False)
    assert res.returncode != 0 and "at most 1024 threads" in res.stderr
    assert run(exe, "ok").stdout.strip() == "done"
