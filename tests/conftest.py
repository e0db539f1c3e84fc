"""Session setup shared by every test module.

- Tests marked `gpu` (or in a module with `pytestmark = pytest.mark.gpu`) are skipped unless a Hopper GPU
  is present, so the CPU suite runs anywhere.
- The kernel cache goes to a throw-away per-session directory, unless the caller already chose one with
  FLASHMLA_RT_CACHE_DIR (then a warm cache is reused). This must happen before any test module imports
  flashmla_rt, because importing it on a Hopper machine compiles/loads the kernels.
"""
import os
import shutil
import tempfile

import pytest

_session_cache_dir = None       # set only when this conftest created the directory (and must remove it)


def pytest_configure(config):
    global _session_cache_dir
    config.addinivalue_line("markers", "gpu: needs a Hopper (sm_90) GPU; skipped otherwise")
    if not os.environ.get("FLASHMLA_RT_CACHE_DIR"):
        _session_cache_dir = tempfile.mkdtemp(prefix="flashmla_rt_test_cache_")
        os.environ["FLASHMLA_RT_CACHE_DIR"] = _session_cache_dir


def pytest_unconfigure(config):
    global _session_cache_dir
    if _session_cache_dir is not None:
        shutil.rmtree(_session_cache_dir, ignore_errors=True)
        os.environ.pop("FLASHMLA_RT_CACHE_DIR", None)
        _session_cache_dir = None


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    import flashmla_rt          # imported late: after pytest_configure has chosen the cache directory
    if flashmla_rt.hopper_available():
        return
    skip = pytest.mark.skip(reason="needs a Hopper (sm_90) GPU")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="module")
def torch():
    """PyTorch, or skip: the GPU tests drive the kernels with torch tensors."""
    return pytest.importorskip("torch")


@pytest.fixture
def fresh_plans():
    """No cached launch plan before or after the test: a cached plan keeps the kernel and device it was built for."""
    from flashmla_rt import _fastpath
    _fastpath._plans.clear()
    yield
    _fastpath._plans.clear()


@pytest.fixture
def route_dependent_launches(monkeypatch):
    """`route(launch_kernel)`: DependentLaunch's cuLaunchKernelEx calls go to `launch_kernel` with cuLaunchKernel's
    arguments, read back from the CUlaunchConfig it was given, after checking its one attribute (programmatic
    stream serialization allowed). The driver reads the arguments during the call, so does the stand-in."""
    from flashmla_rt import _dependent_launch as dl

    def route(launch_kernel):
        def launch_ex(config_address, function, kernel_params, extra):
            cfg = dl.LaunchConfig.from_address(config_address)
            assert cfg.numAttrs == 1
            attr = cfg.attrs[0]
            assert attr.id == 6 and attr.value[0] & 0xFFFFFFFF == 1
            launch_kernel(function, cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ, cfg.blockDimX, cfg.blockDimY,
                          cfg.blockDimZ, cfg.sharedMemBytes, cfg.hStream, kernel_params, extra or 0)
            return 0
        monkeypatch.setattr(dl, "_driver_launch", launch_ex)
    return route
