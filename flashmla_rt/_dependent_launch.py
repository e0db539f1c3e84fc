"""Launching the many-rows combine as the decode's programmatic dependent (PDL, sm_90): its CTAs are placed as
the decode's SMs free up, and those with nothing to merge leave during the decode's tail instead of after it.

CuPy can only call cuLaunchKernel, which has no launch attributes, so this calls the driver's
cuLaunchKernelEx through ctypes, with CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION. The kernels
pair with it (kernels_cu/common/ptx_grid.cuh): the decode executes `griddepcontrol.launch_dependents`, the
combine `griddepcontrol.wait` before it reads a partial. Launched plainly (FLASHMLA_RT_PDL=0, a driver
without cuLaunchKernelEx, or `programmatic=False`), both instructions are no-ops and only the overlap is lost.
The wide combine (few rows, every one split) is launched plainly: as a dependent, all of its CTAs wait, packed
onto the first SMs the decode frees (measured: +2 µs on b4 h16 32K, call 33).
"""
from __future__ import annotations

import ctypes
import functools
import os

_ATTR_PROGRAMMATIC_STREAM_SERIALIZATION = 6   # CUlaunchAttributeID, cuda.h
_MAX_STREAMS = 64                             # launch configs kept per launcher, one per stream


class LaunchAttribute(ctypes.Structure):
    """CUlaunchAttribute: a 4-byte id, padding to 8, then a 64-byte union (the value's first int here)."""
    _fields_ = [("id", ctypes.c_uint32), ("_pad", ctypes.c_uint32), ("value", ctypes.c_uint64 * 8)]


class LaunchConfig(ctypes.Structure):
    """CUlaunchConfig (cuda.h): ctypes' natural alignment gives its layout (hStream at 32, 56 bytes)."""
    _fields_ = [("gridDimX", ctypes.c_uint32), ("gridDimY", ctypes.c_uint32), ("gridDimZ", ctypes.c_uint32),
                ("blockDimX", ctypes.c_uint32), ("blockDimY", ctypes.c_uint32), ("blockDimZ", ctypes.c_uint32),
                ("sharedMemBytes", ctypes.c_uint32), ("hStream", ctypes.c_void_p),
                ("attrs", ctypes.POINTER(LaunchAttribute)), ("numAttrs", ctypes.c_uint32)]


_driver_launch = None      # cuLaunchKernelEx, or False where there is none (then launches are plain)
_error_name = None         # cuGetErrorName, from the same library


def _launch_ex():
    global _driver_launch, _error_name
    if _driver_launch is None:
        fn = False
        if os.environ.get("FLASHMLA_RT_PDL", "1") != "0":
            try:
                lib = ctypes.CDLL("libcuda.so.1")
                fn, _error_name = lib.cuLaunchKernelEx, lib.cuGetErrorName
                fn.argtypes = (ctypes.c_void_p,) * 4
                fn.restype = ctypes.c_int
                _error_name.argtypes = (ctypes.c_int, ctypes.POINTER(ctypes.c_char_p))
                _error_name.restype = ctypes.c_int
            except (OSError, AttributeError):
                fn = False
        _driver_launch = fn
    return _driver_launch


def cupy_launch_kernel():
    """cuLaunchKernel through CuPy's driver binding (imported on first use: it needs a CUDA driver)."""
    from cupy_backends.cuda.api import driver
    return driver.launchKernel


def _plain_launch(*args):
    """A plain launch; the binding replaces this function at the first call, so later launches import nothing."""
    global _plain_launch
    _plain_launch = cupy_launch_kernel()
    return _plain_launch(*args)


def launch_error(status: int, what: str) -> RuntimeError:
    """The error for a failed launch, named as cuda.h names it (CuPy's CUDADriverError is a RuntimeError too)."""
    name = ctypes.c_char_p()
    if _error_name is None or _error_name(status, ctypes.byref(name)) != 0 or not name.value:
        return RuntimeError(f"{what} failed: CUresult {status}")
    return RuntimeError(f"{what} failed: {name.value.decode()} ({status})")


class DependentLaunch:
    """One kernel at one launch shape. `launch(stream_ptr, kernel_params_address)`. With `programmatic`, it is
    launched as the previous kernel's programmatic dependent, and must wait (griddepcontrol.wait) before it
    reads what that kernel wrote; otherwise it is a plain cuLaunchKernel."""
    __slots__ = ("_function", "_grid", "_block", "_smem", "_attr", "_configs", "_name", "_programmatic")

    def __init__(self, function_ptr: int, grid: tuple, block: tuple, smem: int, name: str,
                 programmatic: bool = True):
        self._function, self._smem, self._name, self._programmatic = function_ptr, smem, name, programmatic
        self._grid = tuple(grid) + (1,) * (3 - len(grid))
        self._block = tuple(block) + (1,) * (3 - len(block))
        self._attr = LaunchAttribute(id=_ATTR_PROGRAMMATIC_STREAM_SERIALIZATION)
        self._attr.value[0] = 1                   # programmaticStreamSerializationAllowed
        self._configs = {}                        # stream -> its LaunchConfig (never changed once made)

    def _config(self, stream_ptr: int) -> LaunchConfig:
        cfg = self._configs.get(stream_ptr)
        if cfg is None:
            if len(self._configs) >= _MAX_STREAMS:
                self._configs = {}
            cfg = LaunchConfig(*self._grid, *self._block, self._smem, stream_ptr, ctypes.pointer(self._attr), 1)
            self._configs[stream_ptr] = cfg
        return cfg

    def launch(self, stream_ptr: int, kernel_params: int) -> None:
        launch_ex = (_driver_launch if _driver_launch is not None else _launch_ex()) if self._programmatic else False
        if launch_ex is False:
            _plain_launch(self._function, *self._grid, *self._block, self._smem, stream_ptr, kernel_params, 0)
            return
        status = launch_ex(ctypes.addressof(self._config(stream_ptr)), self._function, kernel_params, None)
        if status:
            raise launch_error(status, f"cuLaunchKernelEx({self._name})")


@functools.lru_cache(maxsize=256)
def launcher(function_ptr: int, grid: tuple, block: tuple, smem: int, name: str,
             programmatic: bool = True) -> DependentLaunch:
    """The DependentLaunch of one kernel at one shape, made once: a caller without a cached plan (the full path)
    then does not rebuild its attribute and per-stream configs on every call."""
    return DependentLaunch(function_ptr, grid, block, smem, name, programmatic)
