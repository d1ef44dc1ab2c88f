#!/usr/bin/env bash
# The GPU measurements in one go, on a machine with an NVIDIA GPU and no internet:
#
#   bash benchmarks/gpu_session.sh                      # setup, tests, all benchmarks (< ~9 min)
#   bash benchmarks/gpu_session.sh tests cuba shd       # choose stages (run in the order given)
#   bash benchmarks/gpu_session.sh scaling mpi          # data-parallel estimate + MPI path check (~4-6 min)
#   bash benchmarks/gpu_session.sh parallel             # time-parallel training vs e-prop, SHD-shaped (~3-5 min)
#
# Stages: tests (pytest -m gpu), cuba (= cuba-host cuba-batch cuba-size), cuba-host,
# cuba-batch, cuba-size, shd (gpu_eprop_shd.py), scaling (gpu_eprop_scaling.py: one
# optimiser step at the per-GPU batches of a global batch of 512 on 1-32 GPUs, the network
# compiled for each batch, and the estimated data-parallel speed-up), mpi (path check: a small training job with 1 process
# and with `mpiexec -n 2` on the one GPU; skipped with a note without an MPI launcher),
# parallel (gpu_parallel_shd.py: the time-parallel method against e-prop, 700 -> 3 x 128 ->
# 20, batch 64, at T = 1,000 and 10,000: seconds per batch, ratio, GPU memory),
# smoke (gpu_cuba, gpu_eprop_shd, gpu_eprop_scaling and gpu_parallel_shd with --quick on
# the cuda backend: a ~2 min check that the GPU paths work), all (= tests cuba-host
# cuba-batch shd cuba-size, the default; scaling, mpi and parallel are not in it: ask for
# them). Setup (pycuda, environment check, nvidia-smi) always runs first.
#
# Run from the repository root. Everything goes to $OUT (default ./out): <stage>.txt
# (the console output), the JSON files of the benchmarks, gpu_tests.txt, setup.txt and
# summary.txt (each stage's exit status and duration). A failing stage does not stop the
# others; the exit status is 1 if any stage failed, timed out or was skipped. Every
# stage runs under `timeout`; the whole script keeps within BUDGET_S seconds (default
# 540): a stage gets at most what is left, and is skipped when under 30 s is left.
# The benchmarks rewrite their JSON after every configuration, so a stage stopped by
# its time limit still leaves what it measured.
#
# Prepare .whl/ beforehand with benchmarks/gpu_prepare.sh (on a machine with internet).
# pycuda: the wheels in .whl/ (pycuda and its pure-Python dependencies) are installed
# with `pip install --no-index --no-deps --target $SITE` (default /tmp/site), which is
# put on PYTHONPATH with the repository itself (no install of spikeforge needed).
# --no-deps because pip --target ignores what is already installed and would look for
# MarkupSafe and typing-extensions in .whl/ (and fail). Without pip the wheels are
# unzipped. Then each of spikeforge's dependencies whose module is missing (numpy, sympy,
# jinja2, pyyaml, tqdm, pytest, ...) is installed from .whl/deps the same way; present
# ones are left alone. Setup lists every module that is still missing.
#
# Environment: OUT, BUDGET_S, PYTHON (default python3), SITE, SPIKEFORGE_CACHE_DIR
# (default /tmp/spikeforge-cache), T_TESTS, T_CUBA_HOST, T_CUBA_BATCH, T_CUBA_SIZE,
# T_SHD, T_SCALING, T_MPI, T_PARALLEL, T_SMOKE (stage time limits, s), CUBA_ARGS, SHD_ARGS,
# SCALING_ARGS, MPI_ARGS, PARALLEL_ARGS, PYTEST_ARGS (extra options), MPIEXEC (the MPI
# launcher, if the mpi stage does not find it).

set -u -o pipefail

if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi

START=$(date +%s)
FAILED=0
BUDGET_S=${BUDGET_S:-540}
OUT=${OUT:-$PWD/out}
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

if [ ! -f benchmarks/gpu_cuba.py ]; then
    echo "run this from the repository root (benchmarks/gpu_cuba.py not found in $PWD)" >&2
    exit 2
fi

elapsed() { echo $(( $(date +%s) - START )); }

# ----------------------------------------------------------------------------- setup

setup() {
    echo "== setup ($(date -Is))"
    echo "repository: $PWD ($(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
    if ! command -v "$PY" >/dev/null 2>&1; then
        echo "ERROR: no $PY on PATH (set PYTHON=...)"; return 1
    fi
    echo "python: $(command -v "$PY"): $("$PY" -c 'import sys; print(sys.version.split()[0])')"

    export SPIKEFORGE_CACHE_DIR=${SPIKEFORGE_CACHE_DIR:-/tmp/spikeforge-cache}
    export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
    export PYTHONUNBUFFERED=1

    if "$PY" -c "import pycuda.driver" >/dev/null 2>&1; then
        echo "pycuda: already importable"
    elif ls .whl/*.whl >/dev/null 2>&1; then
        echo "pycuda: installing from .whl/ into $SITE: $(ls .whl/*.whl | xargs -n1 basename | tr '\n' ' ')"
        mkdir -p "$SITE"
        if "$PY" -m pip --version >/dev/null 2>&1; then
            PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install --quiet --no-index --no-deps --disable-pip-version-check --target "$SITE" .whl/*.whl \
                || echo "ERROR: pip install of .whl/*.whl failed"
        else
            echo "no pip: unzipping the wheels into $SITE"
            for w in .whl/*.whl; do "$PY" -m zipfile -e "$w" "$SITE" || echo "ERROR: cannot unzip $w"; done
        fi
    else
        echo "WARNING: pycuda is not importable and there is no .whl/ with its wheel"
    fi

    # spikeforge's own dependencies, from .whl/deps (benchmarks/gpu_prepare.sh), only those
    # whose module is missing here: never shadow what the machine has (numpy for torch/cupy)
    if ls .whl/deps/*.whl >/dev/null 2>&1; then
        local wanted w f
        wanted=$("$PY" -c '
import importlib.util
wheels = {"numpy": "numpy", "sympy": "sympy", "mpmath": "mpmath", "jinja2": "jinja2", "markupsafe": "markupsafe",
          "yaml": "pyyaml", "tqdm": "tqdm", "pytest": "pytest", "iniconfig": "iniconfig", "pluggy": "pluggy",
          "packaging": "packaging", "pygments": "pygments", "typing_extensions": "typing_extensions"}
print(" ".join(w for mod, w in wheels.items() if importlib.util.find_spec(mod) is None))
')
        for w in $wanted; do
            f=$(ls .whl/deps/*.whl | grep -i "/${w}-[0-9]" | head -1 || true)
            if [ -z "$f" ]; then echo "WARNING: no wheel for missing $w in .whl/deps"; continue; fi
            echo "installing missing $w from $f"
            PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install --quiet --no-index --no-deps --disable-pip-version-check \
                --target "$SITE" "$f" || "$PY" -m zipfile -e "$f" "$SITE" || echo "ERROR: cannot install $f"
        done
    fi

    if ! command -v nvcc >/dev/null 2>&1; then
        for d in /usr/local/cuda/bin /usr/local/cuda-*/bin; do
            if [ -x "$d/nvcc" ]; then export PATH="$PATH:$d"; break; fi
        done
    fi
    echo "nvcc: $(command -v nvcc || echo 'NOT FOUND') $(nvcc --version 2>/dev/null | tail -1)"

    echo "python modules:"
    "$PY" - <<'EOF'
import importlib
need = {"numpy": "spikeforge", "sympy": "spikeforge", "jinja2": "spikeforge", "yaml": "spikeforge (pyyaml)",
        "tqdm": "training progress bars only", "pytest": "the tests stage", "markupsafe": "jinja2, mako",
        "typing_extensions": "pytools (pycuda)", "platformdirs": "pytools (pycuda)", "pycuda": "the cuda backend",
        "pycuda.driver": "the cuda backend", "spikeforge": "everything", "mpi4py": "the mpi stage only"}
missing = []
for mod, why in need.items():
    try:
        m = importlib.import_module(mod)
        print(f"  ok       {mod:18s} {getattr(m, '__version__', getattr(m, 'VERSION_TEXT', ''))}  "
              f"{getattr(m, '__file__', '') or ''}")
    except Exception as exc:
        missing.append(mod)
        print(f"  MISSING  {mod:18s} needed by {why}: {type(exc).__name__}: {exc}")
print("missing: " + (", ".join(missing) if missing else "none"))
try:
    import pycuda.driver as drv
    drv.init()
    d = drv.Device(0)
    v = drv.get_driver_version()
    print(f"pycuda sees {drv.Device.count()} GPU(s); device 0: {d.name()}, {d.total_memory() / 2**30:.1f} GiB, "
          f"compute capability {'.'.join(map(str, d.compute_capability()))}, driver CUDA {v // 1000}.{v % 1000 // 10}")
except Exception as exc:
    print(f"pycuda cannot use a GPU: {type(exc).__name__}: {exc}")
EOF
    echo "nvidia-smi:"
    nvidia-smi 2>&1 || echo "nvidia-smi failed"
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.max.sm,clocks.max.mem,power.limit \
        --format=csv 2>&1 || true
    echo "mpi launcher: $(command -v mpiexec || command -v mpirun || echo 'none on PATH (the mpi stage looks further)')"
    nproc 2>/dev/null | sed 's/^/cpu cores: /'
    free -g 2>/dev/null | head -2
    return 0
}

setup 2>&1 | tee "$OUT/setup.txt"
# the exports above ran in a subshell (the pipe): set them again here
export SPIKEFORGE_CACHE_DIR=${SPIKEFORGE_CACHE_DIR:-/tmp/spikeforge-cache}
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if ! command -v nvcc >/dev/null 2>&1; then
    for d in /usr/local/cuda/bin /usr/local/cuda-*/bin; do
        if [ -x "$d/nvcc" ]; then export PATH="$PATH:$d"; break; fi
    done
fi
echo "setup $(elapsed) s" | tee -a "$SUMMARY"

# ----------------------------------------------------------------------------- stages

# run_stage NAME DEFAULT_LIMIT OUTFILE CMD...: under timeout, output tee'd to OUTFILE
run_stage() {
    local name=$1 limit=$2 file=$3
    shift 3
    local left=$(( BUDGET_S - $(elapsed) - 5 ))
    if [ "$left" -lt 30 ]; then
        echo "== $name: SKIPPED, only ${left} s of the ${BUDGET_S} s budget left" | tee -a "$SUMMARY"
        FAILED=$((FAILED + 1))
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo
    echo "== $name (limit ${limit} s, $(date -Is)): $*"
    local t0 rc
    t0=$(date +%s)
    timeout -k 15 "$limit" "$@" 2>&1 | tee "$file"
    rc=$?
    local note=""
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && note=" (TIMED OUT after ${limit} s)"
    [ "$rc" -ne 0 ] && FAILED=$((FAILED + 1))
    echo "== $name: exit status $rc$note, $(( $(date +%s) - t0 )) s" | tee -a "$SUMMARY"
}

stage() {
    case "$1" in
        tests)
            # shellcheck disable=SC2086
            run_stage tests "${T_TESTS:-150}" "$OUT/gpu_tests.txt" \
                "$PY" -m pytest -q -m gpu -rsfE --continue-on-collection-errors -p no:cacheprovider ${PYTEST_ARGS:-} ;;
        cuba-host|cuba-batch|cuba-size)
            local part=${1#cuba-} var limit
            var="T_CUBA_$(echo "$part" | tr '[:lower:]' '[:upper:]')"
            case "$part" in host) limit=${!var:-60} ;; batch) limit=${!var:-150} ;; size) limit=${!var:-240} ;; esac
            # shellcheck disable=SC2086
            run_stage "$1" "$limit" "$OUT/gpu_cuba_$part.txt" \
                "$PY" benchmarks/gpu_cuba.py --parts "$part" --json "$OUT/gpu_cuba_$part.json" ${CUBA_ARGS:-} ;;
        shd)
            # shellcheck disable=SC2086
            run_stage shd "${T_SHD:-150}" "$OUT/gpu_eprop_shd.txt" \
                "$PY" benchmarks/gpu_eprop_shd.py --json "$OUT/gpu_eprop_shd.json" ${SHD_ARGS:-} ;;
        scaling)
            # shellcheck disable=SC2086
            run_stage scaling "${T_SCALING:-240}" "$OUT/gpu_eprop_scaling.txt" \
                "$PY" benchmarks/gpu_eprop_scaling.py --json "$OUT/gpu_eprop_scaling.json" ${SCALING_ARGS:-} ;;
        mpi)
            # the job, its checkpoints and the launcher's output stay in $OUT/mpi_check/
            # shellcheck disable=SC2086
            run_stage mpi "${T_MPI:-180}" "$OUT/mpi_check.txt" \
                "$PY" benchmarks/gpu_eprop_scaling.py --mpi-check --backend cuda --workdir "$OUT/mpi_check" \
                --json "$OUT/mpi_check.json" ${MPI_ARGS:-}
            if grep -q '^SKIPPED' "$OUT/mpi_check.txt" 2>/dev/null; then
                echo "== mpi: path check SKIPPED (no MPI launcher; see mpi_check.txt)" | tee -a "$SUMMARY"
            fi ;;
        parallel)
            # shellcheck disable=SC2086
            run_stage parallel "${T_PARALLEL:-300}" "$OUT/gpu_parallel_shd.txt" \
                "$PY" benchmarks/gpu_parallel_shd.py --json "$OUT/gpu_parallel_shd.json" ${PARALLEL_ARGS:-} ;;
        smoke)
            run_stage smoke-cuba "${T_SMOKE:-60}" "$OUT/smoke_cuba.txt" \
                "$PY" benchmarks/gpu_cuba.py --quick --backend cuda --json "$OUT/smoke_cuba.json"
            run_stage smoke-shd "${T_SMOKE:-60}" "$OUT/smoke_shd.txt" \
                "$PY" benchmarks/gpu_eprop_shd.py --quick --backend cuda --json "$OUT/smoke_shd.json"
            run_stage smoke-scaling "${T_SMOKE:-60}" "$OUT/smoke_scaling.txt" \
                "$PY" benchmarks/gpu_eprop_scaling.py --quick --backend cuda --json "$OUT/smoke_scaling.json"
            run_stage smoke-parallel "${T_SMOKE:-60}" "$OUT/smoke_parallel.txt" \
                "$PY" benchmarks/gpu_parallel_shd.py --quick --backend cuda --json "$OUT/smoke_parallel.json" ;;
        *)
            echo "unknown stage '$1' (tests, cuba, cuba-host, cuba-batch, cuba-size, shd, scaling, mpi, parallel, smoke, all)" \
                | tee -a "$SUMMARY"
            FAILED=$((FAILED + 1)) ;;
    esac
}

[ $# -eq 0 ] && set -- all
STAGES=()
for s in "$@"; do
    case "$s" in
        all) STAGES+=(tests cuba-host cuba-batch shd cuba-size) ;;
        cuba) STAGES+=(cuba-host cuba-batch cuba-size) ;;
        *) STAGES+=("$s") ;;
    esac
done
echo "stages: ${STAGES[*]} (budget ${BUDGET_S} s, output in $OUT)"
for s in "${STAGES[@]}"; do
    stage "$s"
done

echo
echo "== summary (total $(elapsed) s; $FAILED stage(s) failed, timed out or skipped)"
cat "$SUMMARY"
ls -la "$OUT"
[ "$FAILED" -eq 0 ]
