"""Cached launch plans for torch callers: the per-call host cost of `flash_mla_with_kvcache`.

The first call with a given signature (shapes, strides, dtypes and devices of every argument, head_dim_v,
softmax_scale, causal) goes through the full path: describe, validate, build the argument record. That
path leaves a `LaunchPlan` here. Later calls with the same signature only read the new data pointers, check
the two alignments that depend on them, allocate the results and launch. Anything else (out=/lse= given,
non-torch tensors, another current device) takes the full path.
"""
from __future__ import annotations

import numpy as np

from . import kernels

_MAX_PLANS = 64
_plans: dict = {}
_driver = None


def _launch_kernel(*args):
    """cuLaunchKernel through CuPy's driver binding (imported on first use: needs a CUDA driver)."""
    global _driver
    if _driver is None:
        from cupy_backends.cuda.api import driver
        _driver = driver
    return _driver.launchKernel(*args)

# Positions of the per-call pointers in the record viewed as int64 (kernels.DECODE_PARAMS_FIELDS order).
POINTER_FIELDS = ("q", "kcache", "block_table", "seqlens", "sched_meta", "num_splits", "out", "lse", "o_accum",
               "lse_accum")
_PTR_INDEX = np.array([kernels.DECODE_PARAMS_FIELDS.index(f) for f in POINTER_FIELDS], dtype=np.intp)


def signature(tensors: tuple, head_dim_v, softmax_scale, causal):
    """Hashable description of a call whose tensors are all torch tensors, else None."""
    sig = []
    for t in tensors:
        if type(t).__module__ != "torch" or not hasattr(t, "data_ptr"):
            return None
        sig.append((t.shape, t.stride(), t.dtype, t.device))
    return tuple(sig), head_dim_v, softmax_scale, causal


class LaunchPlan:
    """Everything about a call that the signature fixes; `launch` fills in the pointers."""
    __slots__ = ("device", "torch_device", "out_shape", "out_dtype", "lse_shape", "o_accum_elems", "ws_elems",
                 "record", "variant", "decode_fn", "decode_grid", "combine_fn", "combine_grid", "k_shape", "k_strides",
                 "_kv_ptr", "_kv_map", "_kv_addr")

    def __init__(self, *, device, out_shape, out_dtype, lse_shape, o_accum_elems, lse_accum_elems, record,
                 decode_grid, combine_grid, k_shape, k_strides, variant=kernels.SEESAW, combine_wide=False):
        import torch
        self.device = device
        self.torch_device = torch.device("cuda", device)
        self.out_shape, self.out_dtype, self.lse_shape = out_shape, getattr(torch, out_dtype), lse_shape
        # One fp32 workspace: o_accum, then lse_accum (16-byte aligned start).
        self.o_accum_elems = o_accum_elems
        self.ws_elems = o_accum_elems + lse_accum_elems
        self.record = np.array(record, copy=True)
        self.variant = variant
        self.decode_fn = kernels.decode_kernel(out_dtype, device, variant)
        self.combine_fn = kernels.combine_kernel(out_dtype, device, combine_wide)
        self.decode_grid = tuple(decode_grid) + (1,) * (3 - len(decode_grid))
        self.combine_grid = tuple(combine_grid) + (1,) * (3 - len(combine_grid))
        self.k_shape, self.k_strides = k_shape, k_strides
        self._kv_ptr, self._kv_map, self._kv_addr = None, None, ()

    def _kv_map_addresses(self, kp: int) -> tuple:
        """Addresses of the (cached) tensor maps of the cache at `kp`; the map objects are kept alive here."""
        if kp != self._kv_ptr:
            self._kv_map = self.variant.kv_maps(kp, self.k_shape, self.k_strides)
            self._kv_ptr, self._kv_addr = kp, tuple(m.ctypes.data for m in self._kv_map)
        return self._kv_addr

    def kernel_params(self, q, k_cache, block_table, cache_seqlens, meta, num_splits, out, lse, ws):
        """(kernelParams, record): the array of pointers to each argument's bytes that cuLaunchKernel takes (the
        tensor maps, then the argument record with these tensors' pointers), and the record it points into (keep
        both alive until the launches return; the driver copies the bytes)."""
        wp, kp = ws.data_ptr(), k_cache.data_ptr()
        record = self.record.copy()
        record.view(np.int64)[_PTR_INDEX] = (q.data_ptr(), kp, block_table.data_ptr(), cache_seqlens.data_ptr(),
                                             meta.data_ptr(), num_splits.data_ptr(), out.data_ptr(),
                                             lse.data_ptr(), wp, wp + 4 * self.o_accum_elems)
        return np.array((*self._kv_map_addresses(kp), record.ctypes.data), dtype=np.uintp), record

    # cuLaunchKernel directly (CuPy's launcher converts each argument on every call).
    def launch_decode(self, params: np.ndarray, stream_ptr: int) -> None:
        _launch_kernel(self.decode_fn.ptr, *self.decode_grid, self.variant.threads, 1, 1, self.variant.smem_bytes,
                       stream_ptr, params.ctypes.data, 0)

    def launch_combine(self, params: np.ndarray, stream_ptr: int) -> None:
        """The combine takes only the record: the last entry of `params`."""
        _launch_kernel(self.combine_fn.ptr, *self.combine_grid, kernels.COMBINE_THREADS, 1, 1, 0, stream_ptr,
                       params.ctypes.data + (len(params) - 1) * params.itemsize, 0)

    def launch(self, q, k_cache, block_table, cache_seqlens, meta, num_splits, stream_ptr: int):
        qp, kp = q.data_ptr(), k_cache.data_ptr()
        if (qp | kp) & 15:
            return None                      # let the full path raise its error
        import torch
        out = torch.empty(self.out_shape, dtype=self.out_dtype, device=self.torch_device)
        lse = torch.empty(self.lse_shape, dtype=torch.float32, device=self.torch_device)
        ws = torch.empty(self.ws_elems, dtype=torch.float32, device=self.torch_device)
        params, record = self.kernel_params(q, k_cache, block_table, cache_seqlens, meta, num_splits, out, lse, ws)
        self.launch_decode(params, stream_ptr)         # `record` stays referenced until both launches return
        self.launch_combine(params, stream_ptr)
        return out, lse          # ws may be freed now: torch reuses it only for work queued after these launches


def lookup(sig):
    return _plans.get(sig) if sig is not None else None


def remember(sig, plan: LaunchPlan) -> None:
    if sig is None:
        return
    if len(_plans) >= _MAX_PLANS:
        _plans.clear()
    _plans[sig] = plan
