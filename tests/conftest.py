import os
import shutil

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Tests build into their own cache unless the caller chose one (CI reuses it)."""
    if "SPIKEFORGE_CACHE_DIR" not in os.environ:
        os.environ["SPIKEFORGE_CACHE_DIR"] = str(tmp_path_factory.mktemp("spikeforge-cache"))
    yield


def nvcc_path():
    return shutil.which("nvcc") or (
        "/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None
    )
