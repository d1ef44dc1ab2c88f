#!/usr/bin/env bash
# Before a GPU session, on a machine with internet access: fill .whl/ (git-ignored), the
# folder benchmarks/gpu_session.sh installs from on a GPU machine without internet.
#
#   bash benchmarks/gpu_prepare.sh [WHEEL_DIR]      # WHEEL_DIR: prebuilt pycuda wheels
#                                                   # (default ../shared/gpu-wheels)
#
# .whl/      pycuda and its pure-Python dependencies (installed by gpu_session.sh)
# .whl/deps/ wheels of spikeforge's own dependencies for CPython 3.12 on x86-64 Linux;
#            gpu_session.sh installs one of them only if its module is missing there
#            (so it never shadows what the GPU machine already has, e.g. numpy)
# Then carry .whl to the GPU machine (about 40 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-../shared/gpu-wheels}
mkdir -p .whl/deps
if ls "$src"/*.whl >/dev/null 2>&1; then
    cp "$src"/*.whl .whl/
else
    echo "no wheels in $src: .whl/ gets only the dependencies" >&2
fi
python -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --dest .whl/deps \
    numpy sympy mpmath jinja2 markupsafe pyyaml tqdm pytest iniconfig pluggy packaging pygments typing_extensions
ls .whl .whl/deps
du -sh .whl
