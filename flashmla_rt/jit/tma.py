"""TMA tensor maps (CUtensorMap, 128 B) encoded on the host through the driver, passed to kernels by value.

`cuTensorMapEncodeTiled` is called through ctypes into a 128-byte-aligned NumPy buffer (cuda-bindings'
wrapper hands the driver a buffer that is only 16-byte aligned). Encoding costs microseconds and needs the
driver library and a current context, so maps are cached by everything that defines them.
"""
from __future__ import annotations

import ctypes
from functools import lru_cache

import numpy as np

SWIZZLE_128B = 3
L2_PROMOTION_NONE = 0
L2_PROMOTION_128B = 2
L2_PROMOTION_256B = 3
DTYPE_UINT16 = 1          # TMA only copies bytes: one code serves bf16 and fp16
_DESC_DTYPE = np.dtype((np.void, 128))


@lru_cache(maxsize=1)
def _encode_fn():
    f = ctypes.CDLL("libcuda.so.1").cuTensorMapEncodeTiled
    f.restype = ctypes.c_int
    f.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p,
                  ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint64),
                  ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_uint32),
                  ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    return f


def _aligned_desc() -> np.ndarray:
    raw = np.zeros(256, np.uint8)
    return raw[(-raw.ctypes.data) % 128:][:128].view(_DESC_DTYPE)      # 1 element, 128-B aligned


@lru_cache(maxsize=1024)     # a few maps per layer's cache: a 61-layer model's all fit
def encode_tiled_16bit(address: int, dims: tuple, byte_strides: tuple, box: tuple,
                       l2_promotion: int = L2_PROMOTION_256B) -> np.ndarray:
    """Tensor map of a 16-bit tensor: dims innermost first, byte_strides of dims 1.., box per dim;
    128-byte swizzle (the box's inner extent must be 64 elements), out-of-range elements read as zero."""
    rank = len(dims)
    desc = _aligned_desc()
    rc = _encode_fn()(desc.ctypes.data, DTYPE_UINT16, rank, address,
                      (ctypes.c_uint64 * rank)(*dims), (ctypes.c_uint64 * (rank - 1))(*byte_strides),
                      (ctypes.c_uint32 * rank)(*box), (ctypes.c_uint32 * rank)(*([1] * rank)),
                      0, SWIZZLE_128B, l2_promotion, 0)
    if rc:
        raise RuntimeError(f"cuTensorMapEncodeTiled failed (CUresult {rc}) for dims {dims}, byte strides "
                           f"{byte_strides}, box {box} at {address:#x}")
    return desc
