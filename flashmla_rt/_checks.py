"""Argument validation: every bad input becomes a TypeError/ValueError naming the argument, the expected
value and what was given, before anything is launched."""
from __future__ import annotations

from ._interop import Tensor

HEAD_DIM_K = 576
HEAD_DIM_V = 512
PAGE_SIZES = (16, 32, 64, 128, 256)
QK_DTYPES = ("bfloat16", "float16")


def check_dtype(t: Tensor, allowed: tuple[str, ...]) -> None:
    if t.dtype not in allowed:
        want = " or ".join(allowed)
        raise TypeError(f"{t.name}: expected dtype {want}, got {t.dtype}")


def check_ndim(t: Tensor, ndim: int, layout: str) -> None:
    if t.ndim != ndim:
        raise ValueError(f"{t.name}: expected {ndim} dimensions {layout}, got shape {t.shape}")


def check_dim(t: Tensor, axis: int, expected: int, what: str) -> None:
    if t.shape[axis] != expected:
        raise ValueError(f"{t.name}: expected {what} = {expected} (dim {axis}), got shape {t.shape}")


def check_last_dim_contiguous(t: Tensor) -> None:
    if t.shape[-1] > 1 and t.strides[-1] != 1:
        raise ValueError(f"{t.name}: the last dimension must be contiguous (stride 1), got strides {t.strides}")


def check_contiguous(t: Tensor) -> None:
    if not t.is_contiguous():
        raise ValueError(f"{t.name}: expected a contiguous tensor, got shape {t.shape} with strides {t.strides}")


def check_16b_aligned(t: Tensor, itemsize: int) -> None:
    """The kernel moves rows in 16-byte chunks: base address and row strides must be multiples of 16 B."""
    if t.ptr % 16:
        raise ValueError(f"{t.name}: data pointer must be 16-byte aligned, got address {t.ptr:#x}")
    bad = [s for s, n in zip(t.strides[:-1], t.shape[:-1]) if n > 1 and (s * itemsize) % 16]
    if bad:
        raise ValueError(f"{t.name}: strides must be multiples of 16 bytes ({16 // itemsize} elements), got "
                         f"strides {t.strides}")


def check_on_device(tensors: list[Tensor]) -> int:
    """All tensors on one CUDA device; returns it."""
    for t in tensors:
        if t.device is None:
            raise ValueError(f"{t.name}: expected a tensor on a CUDA device, got host memory ({t.framework})")
    dev = tensors[0].device
    for t in tensors[1:]:
        if t.device != dev:
            raise ValueError(f"{t.name}: expected device cuda:{dev} (same as {tensors[0].name}), got cuda:{t.device}")
    return dev


def check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return value


def check_seqlens(t: Tensor, batch: int | None = None) -> None:
    check_dtype(t, ("int32",))
    check_ndim(t, 1, "[batch]")
    if batch is not None:
        check_dim(t, 0, batch, "batch (q.shape[0])")
    check_contiguous(t)


def check_decode_args(q: Tensor, k_cache: Tensor, block_table: Tensor, cache_seqlens: Tensor, head_dim_v,
                      meta: Tensor, num_splits: Tensor) -> None:
    """Shapes, dtypes and layouts of a flash_mla_with_kvcache call (device placement checked separately)."""
    check_ndim(q, 4, "[batch, seqlen_q, heads_q, head_dim]")
    check_dtype(q, QK_DTYPES)
    b, s_q, h_q, d = q.shape
    if d != HEAD_DIM_K:
        raise ValueError(f"q: expected head_dim = {HEAD_DIM_K} (512 latent + 64 RoPE), got shape {q.shape}")
    if b < 1 or s_q < 1 or h_q < 1:
        raise ValueError(f"q: expected batch, seqlen_q and heads_q >= 1, got shape {q.shape}")
    check_last_dim_contiguous(q)
    check_16b_aligned(q, 2)

    check_ndim(k_cache, 4, "[num_blocks, page_block_size, heads_kv, head_dim]")
    if k_cache.dtype != q.dtype:
        raise TypeError(f"k_cache: expected the same dtype as q ({q.dtype}), got {k_cache.dtype}")
    n_blocks, page, h_kv, dk = k_cache.shape
    if dk != d:
        raise ValueError(f"k_cache: expected head_dim = {d} (same as q), got shape {k_cache.shape}")
    if page not in PAGE_SIZES:
        raise ValueError(f"k_cache: expected page_block_size (dim 1) in {PAGE_SIZES}, got shape {k_cache.shape}")
    if n_blocks < 1 or h_kv < 1:
        raise ValueError(f"k_cache: expected num_blocks and heads_kv >= 1, got shape {k_cache.shape}")
    if h_q % h_kv:
        raise ValueError(f"q: heads_q ({h_q}) must be a multiple of k_cache heads_kv ({h_kv})")
    check_last_dim_contiguous(k_cache)
    check_16b_aligned(k_cache, 2)
    # The combine kernel runs 8 packed rows per CTA along grid.y (at most 65,535 CTAs).
    if -(-(s_q * h_q) // 8) > 65535:
        raise ValueError(f"q: seqlen_q * heads_q = {s_q * h_q} exceeds the supported {65535 * 8} query rows per "
                         f"request, got shape {q.shape}")

    if isinstance(head_dim_v, bool) or not hasattr(head_dim_v, "__index__") or int(head_dim_v) != HEAD_DIM_V:
        raise ValueError(f"head_dim_v: expected {HEAD_DIM_V} (V = first 512 dims of k_cache), got {head_dim_v!r}")

    check_dtype(block_table, ("int32",))
    check_ndim(block_table, 2, "[batch, max_blocks_per_seq]")
    check_dim(block_table, 0, b, "batch (q.shape[0])")
    if block_table.shape[1] < 1:
        raise ValueError(f"block_table: expected at least one column, got shape {block_table.shape}")
    check_last_dim_contiguous(block_table)
    check_seqlens(cache_seqlens, b)

    check_dtype(meta, ("int32",))
    if meta.ndim != 2 or meta.shape[1] != 8 or meta.shape[0] < 1:
        raise ValueError(f"tile_scheduler_metadata: expected shape [num_sm_parts, 8] from get_mla_metadata, got "
                         f"{meta.shape}")
    check_contiguous(meta)
    check_dtype(num_splits, ("int32",))
    if num_splits.ndim != 1 or num_splits.shape[0] != b + 1:
        raise ValueError(f"num_splits: expected shape [{b + 1}] (batch + 1) from get_mla_metadata on this batch's "
                         f"cache_seqlens, got {num_splits.shape}")
    check_contiguous(num_splits)


def check_block_table_covers(block_table: Tensor, page: int, max_seqlen: int) -> None:
    need = -(-max_seqlen // page)
    if need > block_table.shape[1]:
        raise ValueError(f"block_table: a sequence of length {max_seqlen} needs {need} pages of {page} tokens, but "
                         f"block_table has only {block_table.shape[1]} columns")


def check_output(t: Tensor, shape: tuple, dtype: str, device: int) -> None:
    check_dtype(t, (dtype,))
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{t.name}: expected shape {tuple(shape)}, got {t.shape}")
    check_contiguous(t)
    if t.device != device:
        raise ValueError(f"{t.name}: expected device cuda:{device}, got {t.device}")
    if t.ptr % 16:
        raise ValueError(f"{t.name}: data pointer must be 16-byte aligned, got address {t.ptr:#x}")
