"""The ``spikeforge`` command line.

``spikeforge run FILE.yaml`` loads a network described in YAML (see :mod:`spikeforge.config`),
builds it (or loads it from the build cache), runs it and prints a summary::

    spikeforge run examples/cuba.yaml
    spikeforge run examples/cuba.yaml --json --duration 100 --batch-size 4
    spikeforge run examples/cuba.yaml --save spikes.npz

Errors spikeforge raises on purpose are printed as one line, ``spikeforge: error: ...``,
with exit status 2 for a wrong command line or input file and 1 for a failure while doing
valid work (``-v`` adds the traceback and info logging); see docs/cli.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
import warnings
from pathlib import Path

from . import __version__
from .errors import ConfigError, MemoryLimitError, ModelError, NetworkError, SpikeforgeError
from .runtime.backends import backend_names, get_backend


class CliError(SpikeforgeError):
    """A command-line mistake found after argument parsing (e.g. no duration anywhere)."""


class OutputError(SpikeforgeError):
    """A result could not be written (e.g. ``--save`` to a folder without write access)."""


#: Exit statuses (docs/cli.md): 2 when the command line or an input file it names is wrong
#: (nothing ran; it fails again until the input changes), 1 when valid work failed
#: (compiler, backend, memory, I/O), 130 after Ctrl-C.
USAGE_ERROR, RUNTIME_ERROR, INTERRUPTED = 2, 1, 130
#: The errors that are the user's input mistakes; every other SpikeforgeError is a runtime error.
USAGE_ERRORS = (CliError, ConfigError, ModelError, NetworkError)
#: ``schema_version`` of every ``--json`` output; raised when a key changes meaning or goes away.
JSON_SCHEMA_VERSION = 1


def exit_status(exc: SpikeforgeError) -> int:
    """2 (usage error) for a wrong command line or input file, 1 (runtime error) otherwise."""
    return USAGE_ERROR if isinstance(exc, USAGE_ERRORS) else RUNTIME_ERROR


def _json_text(result) -> str:
    """A ``--json`` output: ``schema_version`` first, then ``result``'s keys."""
    return json.dumps({"schema_version": JSON_SCHEMA_VERSION, **result}, indent=2)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """spikeforge's warnings as ``spikeforge: warning: ...`` (one line); others as Python prints them."""
    if category.__module__.startswith("spikeforge"):
        print(f"spikeforge: warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"seed must be in [0, 2**64), got {text!r}")
    return value


def _duration(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration in ms, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"duration must be a positive number of ms, got {text!r}")
    return value


def _plural(n: int, word: str) -> str:
    """``1 population``, ``2 populations``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _seconds(t: float) -> str:
    """A duration in a unit that shows it: ``850 us``, ``52 ms``, ``1.34 s``, ``2 min 05 s``."""
    if t < 1e-3:
        return f"{t * 1e6:.0f} us"
    if t < 1.0:
        return f"{t * 1e3:.0f} ms" if t >= 0.01 else f"{t * 1e3:.1f} ms"
    if t < 60.0:
        return f"{t:.2f} s"
    minutes, rest = divmod(t, 60.0)
    return f"{minutes:.0f} min {rest:02.0f} s"


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps the description as usual, prints the examples' lines as they are written."""

    def _fill_text(self, text, width, indent):
        if text.startswith("examples:\n"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _examples(*lines: str) -> dict:
    """``add_parser`` options for a subcommand whose ``--help`` ends with these examples."""
    return {"epilog": "examples:\n" + "\n".join(f"  {line}" for line in lines), "formatter_class": _HelpFormatter}


def _add_quiet(parser, what: str) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help=what)


def _add_verbose(parser, default=argparse.SUPPRESS):
    """``-v/--verbose`` before or after the subcommand (a subcommand's copy must not reset
    the top-level flag, hence SUPPRESS as its default)."""
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="log progress; show tracebacks on errors")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikeforge",
        description="Code-generating, batched simulator for spiking neural networks.",
        **_examples("spikeforge doctor                      # what this machine can run",
                    "spikeforge run examples/cuba.yaml",
                    "spikeforge train examples/digits.yaml --epochs 2",
                    "spikeforge COMMAND --help              # a command's options and examples"),
    )
    parser.add_argument("--version", action="version", version=f"spikeforge {__version__}")
    _add_verbose(parser, default=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    run = commands.add_parser(
        "run",
        help="build and run a network described in a YAML file",
        description="Build (or load from the cache) and run the network described in FILE.yaml, "
        "then print a summary of the spikes.",
        **_examples("spikeforge run examples/cuba.yaml",
                    "spikeforge run examples/cuba.yaml --batch-size 8 --duration 200 --json",
                    "spikeforge run examples/cuba.yaml --backend cuda-emu --save spikes.npz --plot raster.png"),
    )
    run.add_argument("file", metavar="FILE.yaml", help="the network description (see docs/yaml.md)")
    run.add_argument("--backend", choices=backend_names(),
                     help="backend to run on: " + ", ".join(backend_names()) +
                     " (default: the file's `backend`, else cpu)")
    run.add_argument(
        "--batch-size",
        type=_positive_int,
        metavar="N",
        help="number of independent instances (overrides the file)",
    )
    run.add_argument(
        "--duration", type=_duration, metavar="T", help="how long to simulate, in ms (overrides the file)"
    )
    run.add_argument("--threads", type=_positive_int, metavar="N", help="CPU threads (default: all cores)")
    run.add_argument("--seed", type=_seed, metavar="S", help="random seed (overrides the file)")
    run.add_argument("--save", metavar="OUT.npz", help="save the recordings to this .npz file")
    run.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    run.add_argument("--plot", metavar="OUT.png",
                     help="draw spike rasters and population rates (needs matplotlib: pip install 'spikeforge[plot]')")
    run.add_argument("--check-finite-every", type=_positive_int, metavar="N",
                     help="also check the state for NaN and inf every N steps (default: at the end of the run)")
    run.add_argument("--strict", action="store_true",
                     help="stop with an error (exit 1) at the first NaN or inf state instead of warning")
    shown = run.add_mutually_exclusive_group()
    shown.add_argument("-q", "--quiet", action="store_true",
                       help="no progress bar and no 'compiling ...' line on stderr")
    shown.add_argument("--progress", action="store_true",
                       help="show the progress bar of a long run even when stderr is not a terminal")
    _add_verbose(run)
    run.set_defaults(func=cmd_run)

    build = commands.add_parser(
        "build",
        help="write the generated sources (and compile them) without running",
        description="Generate the code for FILE.yaml into DIR and compile it where the compiler is "
        "present (nvcc for --backend cuda: no GPU needed).",
        **_examples("spikeforge build examples/cuba.yaml --out gen/",
                    "spikeforge build examples/cuba.yaml --backend cuda --arch sm_80 --out gen-cuda/ --json"),
    )
    build.add_argument("file", metavar="FILE.yaml", help="the network description (see docs/yaml.md)")
    build.add_argument("--backend", default="cpu", choices=backend_names(),
                       help="which code to generate (default: cpu)")
    build.add_argument("--arch", default="sm_90", help="CUDA architecture for --backend cuda (default: sm_90)")
    build.add_argument("--out", required=True, metavar="DIR", help="directory to write the files into")
    build.add_argument("--json", action="store_true", help="print the build summary as JSON")
    _add_quiet(build, "print nothing but errors (and --json)")
    _add_verbose(build)
    build.set_defaults(func=cmd_build)

    train = commands.add_parser(
        "train",
        help="train a recurrent spiking network with e-prop",
        description="Train the network described in FILE.yaml (see spikeforge/training/config.py) with e-prop, "
        "then evaluate it on the held-out data.",
        **_examples("spikeforge train examples/digits.yaml",
                    "spikeforge train examples/digits.yaml --epochs 2 --json --plot curves.png",
                    "spikeforge train examples/digits.yaml --checkpoint run.npz --resume",
                    "mpiexec -n 2 spikeforge train examples/digits.yaml"),
    )
    train.add_argument("file", metavar="FILE.yaml", help="the training job")
    train.add_argument("--backend", default="cpu", choices=backend_names(),
                       help="backend to train on (default: cpu)")
    train.add_argument("--epochs", type=_positive_int, metavar="N", help="epochs (overrides the file)")
    train.add_argument("--batch-size", type=_positive_int, metavar="N", help="minibatch size (overrides the file)")
    train.add_argument("--threads", type=_positive_int, metavar="N", help="CPU threads (default: all cores)")
    train.add_argument("--checkpoint", metavar="PATH", help="checkpoint file (overrides the file)")
    train.add_argument("--resume", action="store_true", help="continue from the checkpoint if it exists")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--json", action="store_true", help="print one JSON object with the results")
    _add_quiet(train, "no progress bar and no summary: print nothing but errors (and --json)")
    _add_verbose(train)
    train.add_argument("--plot", metavar="OUT.png", help="draw the loss and accuracy curves (needs matplotlib)")
    train.set_defaults(func=cmd_train)

    show = commands.add_parser(
        "show-code",
        help="print the generated code of a network",
        description="Print the code spikeforge generates for FILE.yaml: every kernel is headed by the model, "
        "population and integrator, every line by the equation it came from.",
        **_examples("spikeforge show-code examples/cuba.yaml --list",
                    "spikeforge show-code examples/cuba.yaml --population exc",
                    "spikeforge show-code examples/cuba.yaml --backend cuda --kernel neuron_update_exc"),
    )
    show.add_argument("file", metavar="FILE.yaml", help="the network description (see docs/yaml.md)")
    show.add_argument("--backend", default="cpu", choices=backend_names(),
                      help="whose code: the C++ of cpu or the CUDA kernels of cuda and cuda-emu (default: cpu)")
    show.add_argument("--kernel", metavar="NAME", help="only this kernel")
    show.add_argument("--population", metavar="NAME", help="only the kernels of this population or projection")
    show.add_argument("--list", action="store_true",
                      help="list the kernels: launch shape (CUDA), arrays read and written, their dimensions")
    show.add_argument("--json", action="store_true", help="with --list: JSON")
    _add_quiet(show, "no log messages: print the code (or the list) alone")
    show.set_defaults(func=cmd_show_code)

    diff = commands.add_parser(
        "diff-code",
        help="show what changed in the generated code between two network files",
        description="Unified diff of the code generated for A.yaml and B.yaml (exit status 1 if they differ).",
        **_examples("spikeforge diff-code examples/cuba.yaml my_cuba.yaml",
                    "spikeforge diff-code a.yaml b.yaml --backend cuda --kernel neuron_update_exc -U 10",
                    "spikeforge diff-code -q a.yaml b.yaml && echo same code"),
    )
    diff.add_argument("a", metavar="A.yaml", help="the first network description (the diff's '-' side)")
    diff.add_argument("b", metavar="B.yaml", help="the second network description (the diff's '+' side)")
    diff.add_argument("--backend", default="cpu", choices=backend_names(),
                      help="whose code to compare (default: cpu)")
    diff.add_argument("--kernel", metavar="NAME", help="only this kernel")
    diff.add_argument("-U", "--context", type=int, default=3, help="lines of context (default 3)")
    _add_quiet(diff, "print no diff: only the exit status says whether the code differs")
    diff.set_defaults(func=cmd_diff_code)

    nir_in = commands.add_parser(
        "import-nir",
        help="write a NIR graph (.nir) as a network YAML file",
        description="Import FILE.nir (the Neuromorphic Intermediate Representation) and write it as a network "
        "YAML file with the equations spelled out (docs/interop.md, \"Import\").",
        **_examples("spikeforge import-nir net.nir --dt 1e-3 --out net.yaml",
                    "spikeforge import-nir net.nir --dt 1 --time-unit ms --reset subtract --out net.yaml"),
    )
    nir_in.add_argument("file", metavar="FILE.nir", help="the NIR graph to import")
    nir_in.add_argument("--dt", type=float, help="time step, in --time-unit (NIR has none; default: the dt "
                        "spikeforge's export wrote into the graph, required for other graphs)")
    nir_in.add_argument("--time-unit", default="s", choices=["s", "ms", "us"],
                        help="unit of the graph's times and of --dt (default: s)")
    nir_in.add_argument("--discretisation", default="exact", choices=["exact", "euler"],
                        help="how the graph's ODEs become steps (default: exact)")
    nir_in.add_argument("--reset", choices=["to_value", "zero", "subtract", "subtract_delayed"],
                        help="reset after a spike (default: to_value, or each node's from spikeforge's metadata)")
    nir_in.add_argument("--ignore-metadata", action="store_true",
                        help="import a graph spikeforge exported as any other (NIR's conventions, not spikeforge's)")
    nir_in.add_argument("--precision", default="float", choices=["float", "double"],
                        help="floating-point type of the generated code (default: float)")
    nir_in.add_argument("--out", required=True, metavar="NET.yaml", help="the YAML file to write")
    _add_quiet(nir_in, "print nothing but errors")
    _add_verbose(nir_in)
    nir_in.set_defaults(func=cmd_import_nir)

    export = commands.add_parser(
        "export-nir",
        help="write a network (or a trained one) as a NIR graph",
        description="Write the network of FILE.yaml (a network file, or a training job with the weights of its "
        "checkpoint) as a NIR graph (docs/interop.md, \"Export\"); needs the package nir.",
        **_examples("spikeforge export-nir examples/cuba.yaml --out cuba.nir",
                    "spikeforge export-nir examples/digits.yaml --checkpoint run.npz --out digits.nir"),
    )
    export.add_argument("file", metavar="FILE.yaml", help="a network file or a training job")
    export.add_argument("--checkpoint", "--weights", metavar="RUN.npz",
                        help="a training job's checkpoint: export its trained weights (default: the job's "
                        "training.checkpoint if it exists, else the initial weights)")
    export.add_argument("--out", required=True, metavar="FILE.nir", help="the NIR file to write")
    _add_quiet(export, "print nothing but errors")
    _add_verbose(export)
    export.set_defaults(func=cmd_export_nir)

    doctor = commands.add_parser(
        "doctor",
        help="check the compilers, CUDA, MPI and NCCL, and say what to install",
        description="Check what spikeforge can use on this machine: the C++ compiler and OpenMP (cpu, cuda-emu), "
        "nvcc, the CUDA headers and driver and pycuda (cuda), MPI and NCCL (several processes and GPUs); "
        "for each missing piece, what to install (docs/install.md). Exit status 1 if no backend can run.",
        **_examples("spikeforge doctor", "spikeforge doctor --json",
                    "spikeforge doctor -q      # the missing pieces only"),
    )
    doctor.add_argument("--json", action="store_true", help="print one JSON object")
    _add_quiet(doctor, "print only what is missing")
    _add_verbose(doctor)
    doctor.set_defaults(func=cmd_doctor)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (main() may run several times in one process)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _setup_logging(verbose: bool) -> None:
    logger = logging.getLogger("spikeforge")
    if not any(getattr(h, "_spikeforge_cli", False) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("spikeforge: %(message)s"))
        handler._spikeforge_cli = True
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)


def _load_run(args):
    """The network and run settings of ``args.file``, and where to keep a cold build for the
    next run (None when there is nowhere, or when this is a warm start). A file run before with
    the same code, compiler and options comes from the warm-start cache, without sympy or
    Jinja2 (docs/backends.md, "Warm start")."""
    from .warm import WarmStart

    warm = WarmStart.for_run(args.file, backend=args.backend, batch_size=args.batch_size, seed=args.seed)
    stored = warm.load() if warm is not None else None
    if stored is not None:
        return (*stored, None)
    from .config import load_file

    net, cfg = load_file(args.file, batch_size=args.batch_size, seed=args.seed)
    net._no_warm_start()  # the file's warm-start entry is `warm`
    if not any(p.record_spikes for p in net.populations.values()) and not net.recorded_vars:
        # Nothing recorded at all: record the spikes of every spiking population.
        net.record_spikes(*(p.name for p in net.populations.values() if p.model.spiking))
    return net, cfg, warm


def cmd_run(args) -> int:
    net, cfg, keep_for = _load_run(args)
    duration = args.duration if args.duration is not None else cfg.duration
    if duration is None:
        raise CliError(f"{args.file}: no duration: set `duration:` (ms) in the file or pass --duration")
    if args.duration is not None:  # the file's duration was checked by the loader
        from .timed import steps_for_duration

        try:
            steps_for_duration(duration, net.dt)
        except SpikeforgeError as exc:
            raise CliError(f"--duration: {exc}") from None
    backend = args.backend or cfg.backend
    save = args.save if args.save is not None else cfg.save

    quiet = bool(getattr(args, "quiet", False))
    compiling = logging.getLogger("spikeforge.compiling")  # "compiling ..." on a cache miss
    level = compiling.level
    compiling.setLevel(logging.WARNING if quiet else logging.INFO)
    try:
        keep = {"keep_initial_values": True} if keep_for is not None else {}
        sim = net.build(backend=backend, threads=args.threads, on_nonfinite="raise" if args.strict else "warn",
                        check_every=args.check_finite_every, progress=False if quiet else (args.progress or None),
                        **keep)
    finally:
        compiling.setLevel(level)
    if keep_for is not None:
        keep_for.store(net, cfg, sim, backend)
    interrupted = False
    try:
        cfg.apply_inputs(sim)
        interrupted = _run_reporting(sim, duration)
        steps = sim.step
        ms = steps * net.dt
        counts = sim.spike_counts()
        rates = {}
        for pop, n in counts.items():
            denom = len(sim.recorded_indices(pop)) * sim.batch_size * ms / 1000.0  # the neurons recorded
            rates[pop] = n / denom if denom > 0 else 0.0
        plotted = None
        if getattr(args, "plot", None):
            from .plots import plot_simulation

            plot_simulation(sim, path=args.plot)
            plotted = str(args.plot)
        saved = None
        if save is not None:
            try:
                saved = str(sim.save(save))
            except OSError as exc:
                raise OutputError(f"cannot save recordings to {str(save)!r}: {exc}") from None
        result = {
            "network": net.name,
            "file": str(args.file),
            "backend": backend,
            "batch_size": sim.batch_size,
            "seed": int(net.seed),
            "precision": net.precision,
            "dt": net.dt,
            "steps": steps,
            "duration_ms": ms,
            "neurons": {p.name: p.size for p in net.populations.values()},
            "spikes": counts,
            "rates_hz": rates,
            "build_seconds": sim.build_seconds,
            "from_cache": bool(sim.from_cache),
            "run_seconds": sim.run_seconds,
            "saved": saved,
            "plot": plotted,
            "steps_requested": sim.run_steps_requested,
            "interrupted": interrupted,
            "nonfinite": [r.as_dict() for r in sim.nonfinite],
        }
    finally:
        sim.close()

    status = 130 if interrupted else 0  # 128 + SIGINT, as a shell reports Ctrl-C
    if args.json:
        print(_json_text(result))
        return status
    n_neurons = sum(result["neurons"].values())
    print(
        f"{net.name}: {_plural(n_neurons, 'neuron')} in {_plural(len(net.populations), 'population')}, "
        f"{_plural(len(net.projections), 'projection')}; batch {sim.batch_size}, dt {net.dt:g} ms, backend {backend}"
    )
    how = "loaded from cache" if result["from_cache"] else "compiled"
    print(f"  build  {_seconds(result['build_seconds'])} ({how})")
    stopped = f", interrupted: {steps} of {sim.run_steps_requested} steps" if interrupted else ""
    print(f"  run    {ms:g} ms ({_plural(steps, 'step')}{stopped}) in {_seconds(result['run_seconds'])}")
    if counts:
        width = max(len(p) for p in counts)
        for pop in counts:
            print(f"  {pop:<{width}}  {counts[pop]:>10} spikes  {rates[pop]:8.2f} Hz per neuron")
    else:
        print("  no spikes recorded")
    if saved:
        print(f"  saved  {saved}")
    if plotted:
        print(f"  plot   {plotted}")
    for r in sim.nonfinite:
        print(f"  NaN/inf  {r.owner}.{r.var}: {r.count} of {r.size} elements, first seen at step {r.first_step}")
    return status


def _run_reporting(sim, duration) -> bool:
    """``sim.run``; NaN/inf warnings become one ``spikeforge: warning:`` line each, and Ctrl-C
    stops the run, keeping (and saying) what was simulated. True if it was interrupted."""
    import warnings

    from .errors import NonFiniteStateWarning

    interrupted = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NonFiniteStateWarning)
        try:
            sim.run(duration=duration)
        except KeyboardInterrupt:
            interrupted = True
    for w in caught:
        print(f"spikeforge: warning: {w.message}", file=sys.stderr)
    if interrupted:
        print(f"spikeforge: interrupted at t = {sim.t:g} ms (step {sim.step} of {sim.run_steps_requested}); "
              "the results cover the part simulated", file=sys.stderr)
    return interrupted


def _write(path: Path, data) -> None:
    """Write a file atomically (a crash never leaves half a file)."""
    from .fileio import atomic_write_text

    atomic_write_text(path, data)


def cmd_build(args) -> int:
    import time

    from .codegen.generate import generate
    from .codegen.launch import plan
    from .config import load_file
    from .errors import CompilerNotFoundError

    net, _ = load_file(args.file)
    backend = get_backend(args.backend)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    spec = generate(net)
    sources, compiled, note = backend.render(spec), False, None
    block_sizes, occupancy = None, []
    try:  # for a GPU, only the compiler is needed (cuda: nvcc, for args.arch; block sizes chosen by occupancy)
        options = {"arch": args.arch} if backend.gpu else {"load": False}
        artefact = backend.build(sources, **options)
    except CompilerNotFoundError as exc:
        if not backend.gpu:
            raise
        note = f"not compiled: {exc}"
    else:
        sources, block_sizes, occupancy = artefact.sources, artefact.sources.block_sizes, artefact.occupancy
        compiled = True
    files = list(sources.files)
    for name, text in sources.files.items():
        _write(out / name, text)
    if compiled:
        _write(out / artefact.build.path.name, artefact.build.path.read_bytes())
        files.append(artefact.build.path.name)
    summary = {
        "network": net.name,
        "backend": args.backend,
        "arch": args.arch if backend.gpu else None,
        "out": str(out),
        "files": files,
        "compiled": compiled,
        "note": note,
        "integrators": spec.integrators,
        "kernels": [k.name for k in spec.kernels],
        "seconds": time.perf_counter() - t0,
    }
    if backend.device:
        summary["launches"] = [
            {"kernel": launch.name, "grid_x": launch.grid_x, "block": launch.block,
             "batch_on_y": launch.batched, "phase": launch.phase}
            for launch in plan(spec, block_sizes)
        ]
        if occupancy:
            summary["occupancy"] = [{**row, "occupancy": {str(b): round(o, 3) for b, o in row["occupancy"].items()}}
                                    for row in occupancy]
    _write(out / "build.json", _json_text(summary))
    if args.json:
        print(_json_text(summary))
    elif not args.quiet:
        print(f"{net.name}: {_plural(len(spec.kernels), 'kernel')} for backend {args.backend} written to {out}")
        for f in files:
            print(f"  {f}")
        if note:
            print(f"  ({note})")
    return 0


def cmd_show_code(args) -> int:
    from .config import load_file

    if args.quiet:
        logging.getLogger("spikeforge").setLevel(logging.ERROR)

    net, _ = load_file(args.file)
    kernels = net.kernels(args.backend)
    if args.population:
        kernels = [k for k in kernels if k["target"] == args.population]
        if not kernels:
            targets = sorted({k["target"] for k in net.kernels(args.backend)})
            raise CliError(f"no kernels for '{args.population}' (populations and projections: {', '.join(targets)})")
    if args.kernel:
        kernels = [k for k in kernels if k["name"] == args.kernel]
        if not kernels:
            raise CliError(f"no kernel named '{args.kernel}' (kernels: "
                           f"{', '.join(k['name'] for k in net.kernels(args.backend))})")
    if args.list:
        if args.json:
            print(_json_text({"network": net.name, "backend": args.backend, "kernels": kernels}))
            return 0
        for k in kernels:
            shape = ""
            if "launch" in k:
                la = k["launch"]
                shape = f"  grid ({la['grid'][0]}, {la['grid'][1]}) x block {la['block']}"
            print(f"{k['name']}: {k['description']}{shape}")
            for what in ("reads", "writes"):
                arrays = ", ".join(f"{a['array']} [{a['dims']}]" for a in k[what])
                print(f"    {what:<6} {arrays or '-'}")
        return 0
    if args.kernel or args.population:
        for k in kernels:
            print(net.generated_code(args.backend, kernel=k["name"]))
    else:
        print(net.generated_code(args.backend), end="")
    return 0


def cmd_diff_code(args) -> int:
    import difflib

    from .config import load_file

    texts = []
    for f in (args.a, args.b):
        net, _ = load_file(f)
        texts.append(net.generated_code(args.backend, kernel=args.kernel).splitlines(keepends=True))
    diff = list(difflib.unified_diff(texts[0], texts[1], fromfile=f"{args.a} ({args.backend})",
                                     tofile=f"{args.b} ({args.backend})", n=args.context))
    if not args.quiet:
        sys.stdout.writelines(diff)
    return 1 if diff else 0


def _regression_nmse(trainer, job) -> dict:
    """Normalised MSE, ``mse / var(target)`` over the readout window (the score of the
    regression tasks; 1 is as good as predicting the mean of the target).

    ``test_nmse``: :func:`~spikeforge.training.datasets.normalized_mse` of the trained
    network's readout traces on the test data (``trainer.predict``), as ``test_mse``.
    ``train_nmse``: ``train_mse`` (the mean over the last epoch, while the weights were
    learning) over the variance of the training targets. Left out where undefined (no
    samples, or a constant target)."""
    import numpy as np

    from .training.datasets import normalized_mse

    result = {}
    history = trainer.history
    test = job.test
    if test is not None and len(test):
        window = test.readout_mask
        target = np.stack([np.asarray(s.target) for s in test], axis=1)  # (steps, samples, outputs)
        try:
            result["test_nmse"] = normalized_mse(trainer.predict(test)[window], target[window])
        except ValueError:  # the target has no variance
            pass
    if history and "train_mse" in history[-1] and len(job.train):
        window = job.train.readout_mask
        n, total = 0, 0.0
        for s in job.train:
            t = np.asarray(s.target, dtype=np.float64)[window]
            n, total = n + t.size, total + float(t.sum())
        mean = total / n
        var = sum(float(((np.asarray(s.target, dtype=np.float64)[window] - mean) ** 2).sum()) for s in job.train) / n
        if var > 0:
            result["train_nmse"] = history[-1]["train_mse"] / var
    return result


def cmd_train(args) -> int:
    import time

    from .training.checkpoints import check_checkpoint_path
    from .training.config import load_training
    from .training.distributed import under_mpi
    from .training.schedules import Schedule
    from .training.trainer import Trainer

    job = load_training(args.file)
    options = dict(job.trainer_options)
    if args.batch_size:
        options["batch_size"] = args.batch_size
    epochs = args.epochs or job.epochs
    if args.epochs and isinstance(options["lr"], Schedule):
        options["lr"] = options["lr"].over(epochs)  # a cosine schedule spans the epochs of this run
    checkpoint = Path(args.checkpoint) if args.checkpoint else job.checkpoint
    if checkpoint is not None and not under_mpi():  # under MPI, rank 0 checks it (Trainer.fit)
        check_checkpoint_path(checkpoint)  # before compiling and training, not after the first epoch
    try:
        trainer = Trainer(job.config, threads=args.threads, backend=args.backend, **options)
        t0 = time.perf_counter()
        history = trainer.fit(job.train, epochs=epochs, validation=job.test,
                              progress=not (args.no_progress or args.json or args.quiet), checkpoint=checkpoint,
                              resume=args.resume)
    except MemoryLimitError as err:  # the batch (the file's training.batch_size unless overridden) does not fit
        where = job.filename if args.batch_size else f"{job.filename}:{job.batch_size_line}"
        raise MemoryLimitError(f"{where}: {err}") from err
    seconds = time.perf_counter() - t0
    if trainer.comm.rank != 0:
        return 0  # rank 0 reports for the whole job
    plotted = None
    if args.plot:
        from .plots import plot_history

        plot_history(history, path=args.plot, title=job.name)
        plotted = str(args.plot)
    last = history[-1] if history else {}
    result = {
        "network": job.name,
        "backend": args.backend,
        "ranks": trainer.comm.size,
        "epochs": trainer.epoch,
        "train_samples": len(job.train),
        "test_samples": len(job.test) if job.test is not None else 0,
        "seconds": seconds,
        "samples_per_second": last.get("samples_per_second"),
        "checkpoint": str(checkpoint) if checkpoint else None,
        "plot": plotted,
        "history": history,
    }
    for split in ("train", "val"):
        for k in ("loss", "accuracy", "mse", "rate_hz"):
            if f"{split}_{k}" in last:
                result[f"{'test' if split == 'val' else 'train'}_{k}"] = last[f"{split}_{k}"]
    if job.train.task == "regression":
        result.update(_regression_nmse(trainer, job))
    if args.json:
        print(_json_text(result))
        return 0
    if args.quiet:
        return 0
    print(f"{job.name}: {_plural(trainer.epoch, 'epoch')} in {_seconds(seconds)} "
          f"({result['samples_per_second'] or 0:.0f} samples/s in the last)")
    for k in ("train_loss", "train_accuracy", "train_mse", "train_nmse", "test_loss", "test_accuracy", "test_mse",
              "test_nmse", "test_rate_hz"):
        if k in result:
            print(f"  {k:<15} {result[k]:.4g}")
    return 0


def cmd_import_nir(args) -> int:
    from .interop.nir_import import nir_plan, plan_yaml

    out = Path(args.out)
    name = out.stem if out.stem.isidentifier() and not out.stem.startswith("_") else "nir"
    plan = nir_plan(args.file, args.dt, time_unit=args.time_unit, discretisation=args.discretisation,
                    reset=args.reset, precision=args.precision, name=name,
                    spikeforge_metadata=not args.ignore_metadata)
    _write(out, plan_yaml(plan, source=Path(args.file).name))
    if args.quiet:
        return 0
    print(f"wrote {out}: {plan.info.summary()}")
    for note in plan.info.notes:
        print(f"  note: {note}")
    return 0


def cmd_export_nir(args) -> int:
    from .interop.nir_export import to_nir, write_nir

    out = Path(args.out)
    if out.is_dir():
        raise OutputError(f"--out {args.out}: is a folder; give a file name")
    graph = to_nir(Path(args.file), checkpoint=args.checkpoint)
    try:
        write_nir(graph, out)
    except OSError as exc:
        raise OutputError(f"--out {args.out}: cannot be written ({exc})") from None
    if not args.quiet:
        print(f"{out}: {_plural(len(graph.nodes), 'NIR node')}, {_plural(len(graph.edges), 'edge')}")
    return 0


def cmd_doctor(args) -> int:
    from .doctor import backends_ready, diagnose, format_report

    checks = diagnose()
    ready = backends_ready(checks)
    if args.json:
        print(_json_text({"checks": [c.as_dict() for c in checks], "backends": ready}))
    elif args.quiet:
        for c in checks:
            if not c.ok:
                print(f"missing {c.name}: {c.detail}; {c.fix}")
    else:
        print(format_report(checks))
    return 0 if any(ready.values()) else RUNTIME_ERROR


def main(argv=None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    verbose = bool(getattr(args, "verbose", False))
    _setup_logging(verbose)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            return args.func(args)
    except SpikeforgeError as exc:
        if verbose:
            traceback.print_exc()
        print(f"spikeforge: error: {exc}", file=sys.stderr)
        return exit_status(exc)
    except MemoryError:
        if verbose:
            traceback.print_exc()
        print("spikeforge: error: out of memory", file=sys.stderr)
        return RUNTIME_ERROR
    except KeyboardInterrupt:
        print("spikeforge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `spikeforge show-code ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
