"""FlashMLA's classic API: `get_mla_metadata` once per decoding step, `flash_mla_with_kvcache` per layer.

Each call: describe the caller's tensors (no copies) -> validate -> allocate results in the caller's
framework -> launch on the caller's current stream. Nothing synchronises the host except the optional
block-table coverage check (skipped while a CUDA graph is being captured; see `check_seqlens`).
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import numbers
import os

import numpy as np

from . import _checks, _dependent_launch, _device, _fastpath, kernels, schedule
from ._interop import Allocator, Tensor, current_stream, describe

LOG2E = math.log2(math.e)


@contextlib.contextmanager
def _on_device(device: int):
    """Make `device` current for the launches, restoring the caller's current device afterwards."""
    _device.require_hopper(device)
    import cupy
    previous = cupy.cuda.runtime.getDevice()
    if previous == device:
        yield
        return
    cupy.cuda.runtime.setDevice(device)
    try:
        yield
    finally:
        cupy.cuda.runtime.setDevice(previous)


def get_mla_metadata(cache_seqlens, num_heads_per_head_k, num_heads_k):
    """Split-KV schedule for one decoding step (share it across layers).

    cache_seqlens: int32 [batch] on a CUDA device; num_heads_per_head_k = s_q * h_q // h_kv; num_heads_k = h_kv.
    Returns (tile_scheduler_metadata int32 [num_sm_parts, 8], num_splits int32 [batch + 1]) in the caller's
    framework, computed by a one-warp kernel on the caller's stream (no host sync; graph-capturable).
    A NumPy `cache_seqlens` is planned on the host by the NumPy twin (for a 132-SM Hopper GPU).
    """
    rows = _checks.check_int("num_heads_per_head_k", num_heads_per_head_k)
    h_kv = _checks.check_int("num_heads_k", num_heads_k)
    seqlens = describe("cache_seqlens", cache_seqlens)
    _checks.check_seqlens(seqlens)
    if seqlens.shape[0] < 1:
        raise ValueError("cache_seqlens: expected at least one request, got an empty array")
    if seqlens.device is None:
        return schedule.plan(np.asarray(cache_seqlens), schedule.num_sm_parts(132, rows, h_kv))
    device = seqlens.device
    with _on_device(device):
        parts = schedule.num_sm_parts(_device.sm_count(device), rows, h_kv)
        batch = seqlens.shape[0]
        alloc = Allocator(seqlens.framework, device)
        meta = alloc.empty((parts, schedule.META_COLS), "int32")
        num_splits = alloc.empty((batch + 1,), "int32")
        kernels.metadata_kernel(device)(
            (1,), (32,), (np.uintp(seqlens.ptr), np.int32(batch), np.int32(parts), np.uintp(alloc.ptr(meta)),
                          np.uintp(alloc.ptr(num_splits))), stream=current_stream(seqlens.framework, device))
    return alloc.export(meta), alloc.export(num_splits)


def flash_mla_with_kvcache(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata,
                           num_splits, softmax_scale=None, causal=False, *, out=None, lse=None,
                           check_seqlens=None):
    """MLA decode attention over a paged latent KV cache (FlashMLA semantics).

    q [b, s_q, h_q, 576]; k_cache [num_blocks, page_block_size, h_kv, 576] (V = first 512 dims), same
    dtype as q (bf16 or fp16); block_table int32 [b, max_blocks]; cache_seqlens int32 [b]; head_dim_v = 512;
    metadata from `get_mla_metadata` on the same cache_seqlens. Causal masking is bottom-right aligned and
    ignored when s_q == 1. Returns (out [b, s_q, h_q, 512] q.dtype, lse [b, h_q, s_q] float32 natural log);
    rows that attend no key get out 0 and lse +inf. `out`/`lse` may be preallocated (contiguous).

    check_seqlens: read max(cache_seqlens) on the host to verify block_table is wide enough (one device
    sync). Default: on, except while the stream is capturing a CUDA graph or when the environment sets
    FLASHMLA_RT_CHECK_SEQLENS=0. Without it the kernel still never reads past block_table's width.
    """
    sig = None
    if out is None and lse is None:
        sig = _fastpath.signature((q, k_cache, block_table, cache_seqlens, tile_scheduler_metadata, num_splits),
                                  head_dim_v, softmax_scale, causal)
        plan = _fastpath.lookup(sig)
        if plan is not None:
            result = _launch_planned(plan, q, k_cache, block_table, cache_seqlens, tile_scheduler_metadata,
                                     num_splits, check_seqlens)
            if result is not None:
                return result
    qt, kt, bt = describe("q", q), describe("k_cache", k_cache), describe("block_table", block_table)
    st = describe("cache_seqlens", cache_seqlens)
    mt, nt = describe("tile_scheduler_metadata", tile_scheduler_metadata), describe("num_splits", num_splits)
    _checks.check_decode_args(qt, kt, bt, st, head_dim_v, mt, nt)
    device = _checks.check_on_device([qt, kt, bt, st, mt, nt])
    with _on_device(device):
        return _launch_decode(qt, kt, bt, st, mt, nt, softmax_scale, causal, out, lse, check_seqlens, device, sig)


def _launch_planned(plan, q, k_cache, block_table, cache_seqlens, meta, num_splits, check_seqlens):
    """A call whose signature was validated before: pointers in, results out (None: take the full path)."""
    import cupy
    if cupy.cuda.runtime.getDevice() != plan.device:      # the tensors' device, as the full path makes current
        with _on_device(plan.device):
            return _launch_planned(plan, q, k_cache, block_table, cache_seqlens, meta, num_splits, check_seqlens)
    stream = current_stream("torch", plan.device)
    if _should_check_seqlens(check_seqlens, stream):
        _checks.check_block_table_covers(describe("block_table", block_table), plan.k_shape[1],
                                         _max_seqlen(cache_seqlens, describe("cache_seqlens", cache_seqlens)))
    return plan.launch(q, k_cache, block_table, cache_seqlens, meta, num_splits, stream.ptr)


def _launch_decode(qt: Tensor, kt: Tensor, bt: Tensor, st: Tensor, mt: Tensor, nt: Tensor,
                   softmax_scale, causal, out, lse, check_seqlens, device: int, sig=None):
    b, s_q, h_q, d = qt.shape
    n_blocks, page, h_kv, _ = kt.shape
    if softmax_scale is None:
        softmax_scale = d ** -0.5
    if isinstance(softmax_scale, bool) or not isinstance(softmax_scale, numbers.Real):
        raise TypeError(f"softmax_scale: expected a float, got {type(softmax_scale).__name__}")
    softmax_scale = float(softmax_scale)
    if not math.isfinite(softmax_scale) or softmax_scale <= 0:
        raise ValueError(f"softmax_scale: expected a finite positive float, got {softmax_scale!r}")
    causal = bool(causal) and s_q > 1
    ngroups = h_q // h_kv
    rows = s_q * ngroups
    parts = mt.shape[0]

    stream = current_stream(qt.framework, device)
    if _should_check_seqlens(check_seqlens, stream):
        _checks.check_block_table_covers(bt, page, _max_seqlen(st.obj, st))

    variant = kernels.decode_variant(rows)
    m_blocks = -(-rows // schedule.BLOCK_M)
    decode_grid = (m_blocks, h_kv, parts)
    combine_wide, combine_grid = kernels.combine_launch(b, h_kv, rows)
    record_args = dict(
        q_stride_b=qt.strides[0], q_stride_s=qt.strides[1], q_stride_h=qt.strides[2],
        k_stride_block=kt.strides[0], k_stride_token=kt.strides[1], k_stride_head=kt.strides[2],
        bt_stride=bt.strides[0], bt_width=bt.shape[1], num_cache_blocks=n_blocks,
        page_shift=page.bit_length() - 1, batch=b, s_q=s_q, h_q=h_q, h_kv=h_kv, ngroups=ngroups, rows=rows,
        causal=int(causal), scale_log2=float(softmax_scale) * LOG2E)
    # Split workspace: at most b + parts chunks exist (each part cuts at most one request).
    o_accum_shape, lse_accum_shape = (b + parts, h_kv, rows, _checks.HEAD_DIM_V), (b + parts, h_kv, rows)
    if sig is not None:                  # only torch callers without out=/lse= get a signature
        plan = _fastpath.LaunchPlan(
            device=device, out_shape=(b, s_q, h_q, _checks.HEAD_DIM_V), out_dtype=qt.dtype, lse_shape=(b, h_q, s_q),
            o_accum_elems=math.prod(o_accum_shape), lse_accum_elems=math.prod(lse_accum_shape),
            record=kernels.decode_params(**dict.fromkeys(_fastpath.POINTER_FIELDS, 0), **record_args),
            decode_grid=decode_grid, combine_grid=combine_grid, k_shape=kt.shape, k_strides=kt.strides,
            variant=variant, combine_wide=combine_wide)
        _fastpath.remember(sig, plan)
        return plan.launch(qt.obj, kt.obj, bt.obj, st.obj, mt.obj, nt.obj, stream.ptr)

    alloc = Allocator(qt.framework, device)
    out_obj, out_t = _output(alloc, out, "out", (b, s_q, h_q, _checks.HEAD_DIM_V), qt.dtype, device)
    lse_obj, lse_t = _output(alloc, lse, "lse", (b, h_q, s_q), "float32", device)
    o_accum = alloc.empty(o_accum_shape, "float32")
    lse_accum = alloc.empty(lse_accum_shape, "float32")
    params = kernels.decode_params(
        q=qt.ptr, kcache=kt.ptr, block_table=bt.ptr, seqlens=st.ptr, sched_meta=mt.ptr, num_splits=nt.ptr,
        out=out_t.ptr, lse=lse_t.ptr, o_accum=alloc.ptr(o_accum), lse_accum=alloc.ptr(lse_accum), **record_args)
    kv_maps = variant.kv_maps(kt.ptr, kt.shape, kt.strides)
    kernels.decode_kernel(qt.dtype, device, variant)(
        decode_grid, (variant.threads,), (*kv_maps, params), shared_mem=variant.smem_bytes, stream=stream)
    combine = kernels.combine_kernel(qt.dtype, device, combine_wide)
    record_address = (ctypes.c_void_p * 1)(params.ctypes.data)     # kernelParams: the record's address
    _dependent_launch.launcher(combine.ptr, tuple(combine_grid), (kernels.COMBINE_THREADS,), 0, "combine",
                               not combine_wide).launch(stream.ptr, ctypes.addressof(record_address))
    return alloc.export(out_obj), alloc.export(lse_obj)


def _output(alloc: Allocator, given, name: str, shape: tuple, dtype: str, device: int):
    if given is None:
        obj = alloc.empty(shape, dtype)
        return obj, describe(name, obj)
    t = describe(name, given)
    _checks.check_output(t, shape, dtype, device)
    return given, t


def _should_check_seqlens(requested, stream) -> bool:
    if requested is not None:
        return bool(requested)
    if os.environ.get("FLASHMLA_RT_CHECK_SEQLENS", "1") == "0":
        return False
    import cupy
    return cupy.cuda.runtime.streamIsCapturing(stream.ptr) == 0


def _max_seqlen(cache_seqlens, st: Tensor) -> int:
    if st.framework == "torch":
        return int(cache_seqlens.max().item())
    import cupy
    return int(cupy.from_dlpack(cache_seqlens).max().get()) if st.framework != "cupy" else int(cache_seqlens.max().get())
