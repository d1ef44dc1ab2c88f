#!/usr/bin/env bash
# Create the git-ignored virtual environment benchmarks/.env-genn with PyGeNN, the GeNN peer of
# benchmarks/genn_cuba.py (engine.py and warm_start.py use it when it is there).
#
# PyGeNN has no wheel on PyPI; it is built from GeNN's source (about 10 minutes on 2 cores):
#   git clone --branch 5.4.0 https://github.com/genn-team/genn /path/to/genn
#   bash benchmarks/setup_genn.sh /path/to/genn
# Without CUDA_PATH in the environment only the CPU backends are built.
set -euo pipefail

src="${1:?usage: bash benchmarks/setup_genn.sh GENN_SOURCE_DIR}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
env_dir="$here/.env-genn"
python="${PYTHON:-python3}"

if [ ! -x "$env_dir/bin/python" ]; then
    "$python" -m venv "$env_dir"
fi
"$env_dir/bin/python" -m pip install --quiet --disable-pip-version-check \
    'numpy<2.4' psutil pybind11 setuptools pkgconfig wheel
"$env_dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-build-isolation "$src"
"$env_dir/bin/python" -c 'import pygenn; print("pygenn", pygenn.__version__)'
