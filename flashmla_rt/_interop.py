"""Framework interop: describe any caller tensor by raw pointer/shape/strides, allocate results in the
caller's framework, and find the caller's current stream.

The hot path never goes through DLPack for torch or CuPy (a `cupy.from_dlpack` costs ~16 µs per tensor):
it reads pointers and strides straight from the objects. JAX arrays and other `__dlpack__` producers are
imported through `cupy.from_dlpack`, which makes our stream wait for their producer (no host sync).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tensor:
    """What the launcher needs to know about one argument."""
    name: str
    obj: object            # the caller's object (kept alive for the launch)
    framework: str         # "torch" | "cupy" | "jax" | "numpy" | "dlpack"
    ptr: int
    shape: tuple
    strides: tuple         # in elements
    dtype: str             # "bfloat16", "float16", "float32", "int32", ...
    device: int | None     # CUDA ordinal, None for host memory

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def is_contiguous(self) -> bool:
        expected, acc = [], 1
        for n in reversed(self.shape):
            expected.append(acc)
            acc *= n
        return all(s == e for s, e, n in zip(self.strides, reversed(expected), self.shape) if n > 1)


def _element_strides(name: str, byte_strides, itemsize: int) -> tuple:
    if any(b % itemsize for b in byte_strides):
        raise ValueError(f"{name}: byte strides {tuple(byte_strides)} are not multiples of the element size "
                         f"({itemsize} bytes)")
    return tuple(b // itemsize for b in byte_strides)


def _module_of(x) -> str:
    return type(x).__module__.split(".", 1)[0]


def describe(name: str, x) -> Tensor:
    """Describe `x` (torch / CuPy / JAX / NumPy / any __dlpack__ object); TypeError if it is none of these."""
    mod = _module_of(x)
    if mod == "torch" and hasattr(x, "data_ptr"):
        dev = x.device.index if x.device.type == "cuda" else None
        return Tensor(name, x, "torch", x.data_ptr(), tuple(x.shape), tuple(x.stride()),
                      str(x.dtype).replace("torch.", ""), dev)
    if mod == "cupy" and hasattr(x, "data") and hasattr(x, "device"):
        return Tensor(name, x, "cupy", x.data.ptr, tuple(x.shape), _element_strides(name, x.strides, x.itemsize),
                      x.dtype.name, x.device.id)
    if isinstance(x, np.ndarray):
        return Tensor(name, x, "numpy", x.ctypes.data, tuple(x.shape), _element_strides(name, x.strides, x.itemsize),
                      x.dtype.name, None)
    if mod in ("jax", "jaxlib") or hasattr(x, "__dlpack__"):
        framework = "jax" if mod in ("jax", "jaxlib") else "dlpack"
        if framework == "jax" and all(d.platform == "cpu" for d in x.devices()):
            arr = np.asarray(x)
            return Tensor(name, x, "jax", arr.ctypes.data, tuple(arr.shape),
                          _element_strides(name, arr.strides, arr.itemsize), arr.dtype.name, None)
        try:
            import cupy
            c = cupy.from_dlpack(x)
        except Exception as e:              # noqa: BLE001 - any import failure means: not a CUDA tensor we can use
            raise TypeError(f"{name}: could not import a {type(x).__name__} through DLPack as a CUDA array "
                            f"({type(e).__name__}: {e})") from None
        d = describe(name, c)
        return Tensor(name, x, framework, d.ptr, d.shape, d.strides, d.dtype, d.device)
    raise TypeError(f"{name}: expected a CUDA tensor (torch.Tensor, jax.Array, cupy.ndarray or any object with "
                    f"__dlpack__), got {type(x).__module__}.{type(x).__name__}")


class RawStream:
    """Anything with an integer `.ptr` is a stream to CuPy's launcher."""
    __slots__ = ("ptr",)

    def __init__(self, ptr: int):
        self.ptr = ptr


def _torch_stream_getter():
    """device -> torch's current stream pointer there. torch._C._cuda_getCurrentRawStream returns the integer
    without building a torch.cuda.Stream (a few µs of an eager call); older torch builds lack it."""
    import torch
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    if raw is not None:
        return raw
    return lambda device: torch.cuda.current_stream(device).cuda_stream


_torch_stream_ptr = None


def current_stream(framework: str, device: int) -> RawStream:
    """The caller's current stream: torch's for torch callers, CuPy's current stream otherwise."""
    if framework == "torch":
        global _torch_stream_ptr
        if _torch_stream_ptr is None:
            _torch_stream_ptr = _torch_stream_getter()
        return RawStream(_torch_stream_ptr(device))
    import cupy
    return RawStream(cupy.cuda.get_current_stream(device).ptr)


class Allocator:
    """Allocates results and workspaces in the caller's framework on `device` (torch allocations are
    graph-capture safe; CuPy's pool serves CuPy, JAX and generic DLPack callers)."""

    def __init__(self, framework: str, device: int):
        self.framework, self.device = framework, device

    def empty(self, shape, dtype: str):
        if self.framework == "torch":
            import torch
            return torch.empty(shape, dtype=getattr(torch, dtype), device=f"cuda:{self.device}")
        import cupy
        np_dtype = _numpy_dtype(dtype)
        with cupy.cuda.Device(self.device):
            return cupy.empty(shape, dtype=np_dtype)

    def ptr(self, x) -> int:
        return x.data_ptr() if self.framework == "torch" else x.data.ptr

    def export(self, x):
        """Hand a result back in the caller's framework (zero-copy)."""
        if self.framework == "jax":
            import jax
            return jax.dlpack.from_dlpack(x)
        return x


def _numpy_dtype(dtype: str):
    if dtype == "bfloat16":
        import ml_dtypes
        return ml_dtypes.bfloat16
    return np.dtype(dtype)
