import os
import shutil

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Tests build into their own cache unless the caller chose one (CI reuses it). One cache for the whole
    session: a program that several tests generate identically is compiled once; with SPIKEFORGE_CACHE_DIR
    set, once for every session (the README's quick local loop)."""
    if "SPIKEFORGE_CACHE_DIR" not in os.environ:
        os.environ["SPIKEFORGE_CACHE_DIR"] = str(tmp_path_factory.mktemp("spikeforge-cache"))
    yield


def nvcc_path():
    return shutil.which("nvcc") or (
        "/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None
    )


def gpu_available() -> bool:
    try:
        from spikeforge.runtime.cuda import import_pycuda

        import_pycuda()
        return True
    except Exception:
        return False


BACKENDS = ["cpu", "cuda-emu", pytest.param("cuda", marks=pytest.mark.gpu)]
# The same, with cuda-emu marked slow, for tests whose cuda-emu run takes seconds (the emulator runs each CUDA
# thread as a fiber): @pytest.mark.parametrize("backend", BACKENDS_SLOW_EMU, indirect=True)
BACKENDS_SLOW_EMU = ["cpu", pytest.param("cuda-emu", marks=pytest.mark.slow),
                     pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Every backend that can run here: the numerics tests run on each of them."""
    if request.param == "cuda" and not gpu_available():
        pytest.skip("needs a CUDA GPU and pycuda")
    return request.param


def pytest_collection_modifyitems(config, items):
    """The quick loop (``-m "not slow"``) builds CUDA for sm_80 only: every test parametrised
    on sm_90 as well is slow, so the full suite (CI) still compiles for both."""
    for item in items:
        if "sm_90" in item.nodeid:
            item.add_marker(pytest.mark.slow)
