"""The layout of e-prop's per-synapse work, measured: instance-major (one batch instance
after another, the synapse loop vectorised over postsynaptic neurons: what spikeforge
generates) against batch-lane (the batch instances of a synapse side by side, vectorised over
the batch), for the blocked eligibility update of 16 steps (docs/training.md, "Blocks of steps
on the CPU") of the projections of ``eprop_vs_snntorch.py``'s network at batch 32.

The same arithmetic in both; a C++ file compiled with the cpu backend's flags, one thread,
the minimum of 5 rounds of 200 blocks.

    python benchmarks/eprop_layout.py [--json OUT]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    common_parser,
    describe_machine,
    finish_args,
    machine_info,
    print_table,
    single_thread_env,
    write_json,
)

SOURCE = r"""
// per-synapse e-prop block update (16 steps), two layouts: instance-major (vectorised over the
// postsynaptic neuron j, one instance after another) and batch-lane (vectorised over instances b)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
typedef float scalar;
const int S = 16;
static double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
__attribute__((noinline)) void instance_major(int B, int NP, int NQ, scalar* ebar, scalar* grad, const scalar* psi,
        const scalar* L, const scalar* E, const scalar* C, scalar kn, scalar kappa) {
    for (int b = 0; b < B; b++) {
        scalar* eb = ebar + (size_t)b * NP * NQ; scalar* g = grad + (size_t)b * NP * NQ;
        const scalar* ps = psi + (size_t)b * S * NQ; const scalar* l = L + (size_t)b * S * NQ;
        const scalar* e = E + (size_t)b * S * NP; const scalar* c = C + (size_t)b * NQ;
        for (int i = 0; i < NP; i++) {
            #pragma omp simd
            for (int j = 0; j < NQ; j++) {
                const size_t k = (size_t)i * NQ + j;
                scalar acc = kn * eb[k], dw = eb[k] * c[j];
                for (int s = 0; s < S; s++) {
                    acc += ps[s * NQ + j] * e[s * NP + i];
                    dw += l[s * NQ + j] * e[s * NP + i];
                }
                eb[k] = acc; g[k] += (1 - kappa) * dw;
            }
        }
    }
}
__attribute__((noinline)) void batch_lane(int B, int NP, int NQ, scalar* ebar, scalar* grad, const scalar* psi,
        const scalar* L, const scalar* E, const scalar* C, scalar kn, scalar kappa) {
    // ebar[k][b], psi[s][j][b], L[s][j][b], E[s][i][b], C[j][b]
    for (int i = 0; i < NP; i++)
        for (int j = 0; j < NQ; j++) {
            scalar* eb = ebar + ((size_t)i * NQ + j) * B; scalar* g = grad + ((size_t)i * NQ + j) * B;
            #pragma omp simd
            for (int b = 0; b < B; b++) {
                scalar acc = kn * eb[b], dw = eb[b] * C[(size_t)j * B + b];
                for (int s = 0; s < S; s++) {
                    const scalar e = E[((size_t)s * NP + i) * B + b];
                    acc += psi[((size_t)s * NQ + j) * B + b] * e; dw += L[((size_t)s * NQ + j) * B + b] * e;
                }
                eb[b] = acc; g[b] += (1 - kappa) * dw;
            }
        }
}
int main(int argc, char** argv) {
    int B = 32, reps = 200;
    int shapes[3][2] = {{100, 100}, {40, 100}, {100, 2}};
    for (auto& sh : shapes) {
        int NP = sh[0], NQ = sh[1];
        size_t ns = (size_t)B * NP * NQ;
        std::vector<scalar> ebar(ns, 0.01f), grad(ns, 0), psi((size_t)B * S * NQ, 0.3f), L((size_t)B * S * NQ, 0.2f),
            E((size_t)B * S * NP, 0.5f), C((size_t)B * NQ, 0.1f);
        double best[2] = {1e9, 1e9};
        for (int r = 0; r < 5; r++) {
            double t = now();
            for (int k = 0; k < reps; k++)
                instance_major(B, NP, NQ, ebar.data(), grad.data(), psi.data(), L.data(), E.data(), C.data(),
                               0.5f, 0.95f);
            best[0] = std::min(best[0], now() - t);
            t = now();
            for (int k = 0; k < reps; k++)
                batch_lane(B, NP, NQ, ebar.data(), grad.data(), psi.data(), L.data(), E.data(), C.data(), 0.5f, 0.95f);
            best[1] = std::min(best[1], now() - t);
        }
        printf("%d,%d,%d,%.3f,%.3f\n", NP, NQ, B, best[0] / reps * 1e6, best[1] / reps * 1e6);
    }
}
"""


def main() -> int:
    p = common_parser(__doc__.splitlines()[0])
    args = finish_args(p.parse_args())
    from spikeforge.runtime.build import BASE_FLAGS, find_cxx_compiler

    info = machine_info()
    print(describe_machine(info))
    with tempfile.TemporaryDirectory() as tmp:
        cpp, exe = Path(tmp, "lane.cpp"), Path(tmp, "lane")
        cpp.write_text(SOURCE)
        flags = [f for f in BASE_FLAGS if f not in ("-shared", "-fPIC")]
        subprocess.run([find_cxx_compiler(), *flags, "-fopenmp", "-march=native", str(cpp), "-o", str(exe)], check=True)
        out = subprocess.run([str(exe)], env=single_thread_env(), capture_output=True, text=True, check=True).stdout
    rows, results = [], []
    for line in out.split():
        n_pre, n_post, batch, im, bl = line.split(",")
        results.append(dict(n_pre=int(n_pre), n_post=int(n_post), batch=int(batch), instance_major_us=float(im),
                            batch_lane_us=float(bl)))
        rows.append([f"{n_pre} -> {n_post}", batch, f"{float(im):.1f}", f"{float(bl):.1f}",
                     f"{float(bl) / float(im):.2f}"])
    print_table(["projection", "batch", "instance-major µs per block", "batch-lane µs per block",
                 "batch-lane / instance-major"], rows, title="e-prop eligibility, 16 steps per block, one thread")
    if args.json:
        write_json(args.json, {"benchmark": "eprop_layout", "machine": info, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
