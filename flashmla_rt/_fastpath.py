"""Cached launch plans for torch callers: the per-call host cost of `flash_mla_with_kvcache`.

The first call with a given signature (shapes, strides, dtypes and devices of every argument, head_dim_v,
softmax_scale, causal) goes through the full path: describe, validate, build the argument record. That
path leaves a `LaunchPlan` here. Later calls with the same signature only read the new data pointers, check
the two alignments that depend on them, allocate the results and launch. Anything else (out=/lse= given,
non-torch tensors, another current device) takes the full path.
"""
from __future__ import annotations

import ctypes
import struct

import numpy as np

from . import _dependent_launch, kernels

_MAX_PLANS = 64
_MAX_CACHES_PER_PLAN = 256        # distinct k_cache pointers remembered per plan (e.g. one per layer)
_plans: dict = {}


def _launch_kernel(*args):
    """The decode's cuLaunchKernel; the binding replaces this function at the first call, so later launches
    call it directly."""
    global _launch_kernel
    _launch_kernel = _dependent_launch.cupy_launch_kernel()
    return _launch_kernel(*args)

# The per-call pointers, in kernels.DECODE_PARAMS_FIELDS order.
POINTER_FIELDS = ("q", "kcache", "block_table", "seqlens", "sched_meta", "num_splits", "out", "lse", "o_accum",
               "lse_accum")
# KernelArgs fills them with one struct pack, so they must be the record's first fields, 8 bytes each.
if [kernels.DECODE_PARAMS_DTYPE.fields[f][1] for f in POINTER_FIELDS] != list(range(0, 8 * len(POINTER_FIELDS), 8)):
    raise RuntimeError("kernels.DECODE_PARAMS_DTYPE no longer starts with the POINTER_FIELDS: update KernelArgs")


class KernelArgs:
    """The bytes cuLaunchKernel reads for one launch, in one fresh 8-byte-aligned ctypes buffer per call (no
    state shared between calls): the kernelParams array (`n_maps` tensor-map addresses, then the record's
    address), directly followed by the record (the plan's template with the pointers written in). The record
    starts with the pointer fields, so the record's address and the pointers are contiguous: one pack writes
    the whole array and every pointer (patching a NumPy record and building a NumPy array took several µs)."""
    __slots__ = ("record_offset", "_template", "_buffer_type", "_pack_into")

    def __init__(self, record: bytes, n_maps: int):
        if len(record) != kernels.DECODE_PARAMS_DTYPE.itemsize:
            raise ValueError(f"record: expected {kernels.DECODE_PARAMS_DTYPE.itemsize} bytes, got {len(record)}")
        self.record_offset = 8 * (n_maps + 1)
        self._template = bytes(self.record_offset) + record
        self._buffer_type = ctypes.c_uint64 * (len(self._template) // 8)
        self._pack_into = struct.Struct(f"<{n_maps + 1 + len(POINTER_FIELDS)}Q").pack_into

    def build(self, map_addresses: tuple, pointers: tuple) -> ctypes.Array:
        """A buffer whose address is the decode's kernelParams; `pointers` in POINTER_FIELDS order."""
        buf = self._buffer_type.from_buffer_copy(self._template)
        self._pack_into(buf, 0, *map_addresses, ctypes.addressof(buf) + self.record_offset, *pointers)
        return buf


def signature(tensors: tuple, head_dim_v, softmax_scale, causal):
    """Hashable description of a call whose tensors are all torch tensors, else None."""
    sig = []
    for t in tensors:
        if type(t).__module__ != "torch" or not hasattr(t, "data_ptr"):
            return None
        # get_device() and is_cuda are plain values; t.device builds a torch.device on every access
        sig.append((t.shape, t.stride(), t.dtype, t.get_device(), t.is_cuda))
    return tuple(sig), head_dim_v, softmax_scale, causal


class LaunchPlan:
    """Everything about a call that the signature fixes; `launch` fills in the pointers."""
    __slots__ = ("device", "out_shape", "lse_shape", "o_accum_elems", "ws_elems",
                 "record", "variant", "decode_fn", "decode_grid", "combine_fn", "combine_grid", "k_shape", "k_strides",
                 "_kv", "_args", "_decode_head", "_combine", "_float32")

    def __init__(self, *, device, out_shape, out_dtype, lse_shape, o_accum_elems, lse_accum_elems, record,
                 decode_grid, combine_grid, k_shape, k_strides, variant=kernels.SEESAW, combine_wide=False):
        import torch
        self.device = device
        self.out_shape, self.lse_shape = out_shape, lse_shape     # out takes q's dtype (out_dtype names it)
        self._float32 = torch.float32
        # One fp32 workspace: o_accum, then lse_accum (16-byte aligned start).
        self.o_accum_elems = o_accum_elems
        self.ws_elems = o_accum_elems + lse_accum_elems
        self.record = np.asarray(record).tobytes()
        self.variant = variant
        self.decode_fn = kernels.decode_kernel(out_dtype, device, variant)
        self.combine_fn = kernels.combine_kernel(out_dtype, device, combine_wide)
        self.decode_grid = tuple(decode_grid) + (1,) * (3 - len(decode_grid))
        self.combine_grid = tuple(combine_grid) + (1,) * (3 - len(combine_grid))
        # cuLaunchKernel's arguments up to the stream: function, grid, block, dynamic shared memory.
        self._decode_head = (self.decode_fn.ptr, *self.decode_grid, variant.threads, 1, 1, variant.smem_bytes)
        self._combine = _dependent_launch.launcher(self.combine_fn.ptr, self.combine_grid,
                                                   (kernels.COMBINE_THREADS,), 0, "combine", not combine_wide)
        self.k_shape, self.k_strides = k_shape, k_strides
        # cache pointer -> (maps, their addresses): one entry per layer's cache when every layer has its own
        # k_cache of the same signature (a serving loop calls them in turn).
        self._kv = {}
        self._args = None             # KernelArgs, made at the first call (it needs the number of maps)

    def _kv_entry(self, kp: int) -> tuple:
        """(maps, map addresses) of the cache at `kp`; the entry keeps the map objects alive."""
        kv = self._kv.get(kp)
        if kv is None:
            maps = self.variant.kv_maps(kp, self.k_shape, self.k_strides)
            if self._args is None:    # set before the entry: whoever finds the entry finds it (equal if made twice)
                self._args = KernelArgs(self.record, len(maps))
            if len(self._kv) >= _MAX_CACHES_PER_PLAN:
                self._kv = {}
            kv = self._kv[kp] = (maps, tuple(m.ctypes.data for m in maps))
        return kv

    def kernel_params(self, q, k_cache, block_table, cache_seqlens, meta, num_splits, out, lse, ws) -> ctypes.Array:
        """The buffer whose address is the decode's kernelParams: the tensor maps' addresses, the record's, then the
        record with these tensors' pointers (see KernelArgs). Keep it alive until both launches return; the driver
        copies the bytes."""
        wp, kp = ws.data_ptr(), k_cache.data_ptr()
        kv = self._kv_entry(kp)
        return self._args.build(kv[1], (q.data_ptr(), kp, block_table.data_ptr(), cache_seqlens.data_ptr(),
                                        meta.data_ptr(), num_splits.data_ptr(), out.data_ptr(), lse.data_ptr(),
                                        wp, wp + 4 * self.o_accum_elems))

    # cuLaunchKernel directly (CuPy's launcher converts each argument on every call).
    def launch_decode(self, params: ctypes.Array, stream_ptr: int) -> None:
        _launch_kernel(*self._decode_head, stream_ptr, ctypes.addressof(params), 0)

    def launch_combine(self, params: ctypes.Array, stream_ptr: int) -> None:
        """The combine takes only the record: its kernelParams is the slot of `params` holding the record's
        address (the last one before the record). The many-rows combine is the decode's programmatic dependent."""
        self._combine.launch(stream_ptr, ctypes.addressof(params) + self._args.record_offset - 8)

    def launch(self, q, k_cache, block_table, cache_seqlens, meta, num_splits, stream_ptr: int):
        if (q.data_ptr() | k_cache.data_ptr()) & 15:
            return None                      # let the full path raise its error
        # new_empty takes q's device (and, for out, its dtype: the signature fixed both) without parsing them
        out = q.new_empty(self.out_shape)
        lse = q.new_empty(self.lse_shape, dtype=self._float32)
        ws = q.new_empty((self.ws_elems,), dtype=self._float32)
        params = self.kernel_params(q, k_cache, block_table, cache_seqlens, meta, num_splits, out, lse, ws)
        self.launch_decode(params, stream_ptr)         # `params` stays referenced until both launches return
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
