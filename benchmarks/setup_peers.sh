#!/usr/bin/env bash
# Create (or update) the git-ignored virtual environment benchmarks/.env that
# holds the *peer* simulators we benchmark spikeforge against. Idempotent:
# re-running it reuses the existing venv and pip skips what is already installed.
#
# Usage: bash benchmarks/setup_peers.sh      (from anywhere)
# Override the interpreter with PYTHON=/path/to/python3.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
env_dir="$here/.env"
python="${PYTHON:-python3}"

if [ ! -x "$env_dir/bin/python" ]; then
    "$python" -m venv "$env_dir"
fi

# Brian2 (C++ standalone mode is used by benchmarks/brian2_cuba.py).
# numpy<2.4: brian2 does not support newer numpy yet.
# setuptools: needed by brian2's code generation / build helpers.
"$env_dir/bin/python" -m pip install --quiet --disable-pip-version-check \
    brian2 'numpy<2.4' setuptools

# Later: snntorch (and torch) for the snntorch peer benchmark, e.g.
#   "$env_dir/bin/python" -m pip install --quiet snntorch

"$env_dir/bin/python" -c 'import brian2, numpy; print("brian2", brian2.__version__, "numpy", numpy.__version__)'
