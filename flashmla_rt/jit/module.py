"""Loaded kernels: one CuPy `Module` per (source, device), functions looked up by their extern "C" name."""
from __future__ import annotations

import threading

from . import compiler

_lock = threading.Lock()
_modules: dict[tuple[str, int], object] = {}
_functions: dict[tuple[str, str, int], object] = {}


def get_function(source: str, name: str, device: int, max_dynamic_smem: int = 0):
    """The cupy.cuda.function.Function `name` of kernels_cu/<source> on `device` (compiled on first use).

    `max_dynamic_smem` > 48 KB is opted into once per function and device."""
    key = (source, name, device)
    fn = _functions.get(key)
    if fn is not None:
        return fn
    import cupy
    with _lock:
        fn = _functions.get(key)
        if fn is not None:
            return fn
        mod = _modules.get((source, device))
        if mod is None:
            built = compiler.compile_source(source)
            with cupy.cuda.Device(device):
                mod = cupy.cuda.function.Module()
                mod.load(built.cubin)
            _modules[(source, device)] = mod
        with cupy.cuda.Device(device):
            fn = mod.get_function(name)
            if max_dynamic_smem > 48 * 1024:
                from cupy.cuda import driver
                driver.funcSetAttribute(fn.ptr, driver.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                        max_dynamic_smem)
        _functions[key] = fn
        return fn
