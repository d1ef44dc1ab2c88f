"""Strong scaling of data-parallel e-prop training: 1 vs 2 MPI ranks on this machine.

Trains examples/digits.yaml (or --job FILE) for one epoch with the same global batch:
one process with one thread, one process with two OpenMP threads, and two MPI ranks with
one thread each; reports samples/s and the speed-up over one process with one thread.

    python benchmarks/mpi_scaling.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, common_parser, finish_args, machine_info, print_table, write_json  # noqa: E402


def _train(job: Path, ranks: int, threads: int, epochs: int) -> dict:
    cmd = [sys.executable, "-m", "spikeforge.cli", "train", str(job), "--json", "--epochs", str(epochs),
           "--threads", str(threads)]
    if ranks > 1:
        mpiexec = shutil.which("mpiexec")
        if mpiexec is None:
            raise SystemExit("mpiexec not found: pip install mpich mpi4py")
        cmd = [mpiexec, "-n", str(ranks), *cmd]
    env = {"OMP_NUM_THREADS": str(threads), "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO,
                         env={**__import__("os").environ, **env})
    text = out.stdout
    return json.loads(text[text.index("{"):])


def main(argv=None):
    parser = common_parser(__doc__.splitlines()[0])
    parser.add_argument("--job", default=str(REPO / "examples" / "digits.yaml"))
    parser.add_argument("--epochs", type=int, default=2)
    args = finish_args(parser.parse_args(argv))
    job = Path(args.job)
    epochs = 1 if args.quick else args.epochs
    configs = [(1, 1), (1, 2), (2, 1)]
    rows, raw = [], {"machine": machine_info(), "job": str(job), "epochs": epochs, "runs": []}
    base = None
    for ranks, threads in configs:
        res = _train(job, ranks, threads, epochs)
        sps = max(h["samples_per_second"] for h in res["history"])
        base = base or sps
        raw["runs"].append({"ranks": ranks, "threads": threads, "samples_per_second": sps,
                            "test_accuracy": res.get("test_accuracy")})
        rows.append([ranks, threads, f"{sps:,.0f}", f"{sps / base:.2f}x", f"{res.get('test_accuracy', 0):.3f}"])
    print_table(["MPI ranks", "threads/rank", "samples/s (best epoch)", "speed-up", "test accuracy"], rows,
                title=f"e-prop strong scaling, {job.name}, global batch as in the file, {epochs} epoch(s)")
    if args.json:
        write_json(args.json, raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
