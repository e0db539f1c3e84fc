"""CPU tests of argument validation in flashmla_rt's public API.

Shapes, dtypes and layouts are validated before the device check, so NumPy inputs (bf16 through
ml_dtypes) exercise every check on a machine without a GPU: each bad input must raise TypeError or
ValueError naming the offending argument, and a fully valid NumPy call must be refused only because the
data lives in host memory. `get_mla_metadata` on NumPy seqlens returns the NumPy twin's plan.
"""
import math

import ml_dtypes
import numpy as np
import pytest

import flashmla_rt
from flashmla_rt import schedule

BF16 = ml_dtypes.bfloat16
B, S_Q, H_Q, H_KV, PAGE, D, DV = 2, 2, 16, 1, 64, 576, 512
SEQLENS = np.array([100, 30], dtype=np.int32)


def aligned(shape, dtype, align=64):
    """A zeroed array whose data pointer is `align`-byte aligned (so only the intended check can fire)."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    buf = np.zeros(nbytes + align, dtype=np.uint8)
    off = (-buf.ctypes.data) % align
    return buf[off:off + nbytes].view(dtype).reshape(shape)


def valid_args(dtype=BF16):
    """A complete, valid flash_mla_with_kvcache call made of NumPy arrays (host memory)."""
    q = aligned((B, S_Q, H_Q, D), dtype)
    n_blocks = 4
    k_cache = aligned((n_blocks, PAGE, H_KV, D), dtype)
    block_table = np.arange(B * 2, dtype=np.int32).reshape(B, 2)
    seqlens = SEQLENS.copy()
    meta, splits = flashmla_rt.get_mla_metadata(seqlens, S_Q * H_Q // H_KV, H_KV)
    return dict(q=q, k_cache=k_cache, block_table=block_table, cache_seqlens=seqlens, head_dim_v=DV,
                tile_scheduler_metadata=meta, num_splits=splits)


def call(args):
    return flashmla_rt.flash_mla_with_kvcache(**args)


def _misaligned_strides_q():
    # Same shape [B, S_Q, H_Q, 576], last dim contiguous, but the head stride is 580 elements = 1160 bytes,
    # not a multiple of 16 bytes.
    base = aligned((B, S_Q, H_Q, 580), BF16)
    q = base[..., :D]
    assert q.shape == (B, S_Q, H_Q, D) and q.strides[-1] == 2 and (q.strides[2] % 16)
    return q


def _strided_last_dim_q():
    base = aligned((B, S_Q, H_Q, 2 * D), BF16)
    q = base[..., ::2]
    assert q.shape == (B, S_Q, H_Q, D) and q.strides[-1] == 4
    return q


# (id, mutation of the valid args, expected exception, regex that must appear in the message)
BAD_DECODE = [
    ("q_float32", lambda a: a.update(q=aligned((B, S_Q, H_Q, D), np.float32)), TypeError, r"^q: .*dtype"),
    ("q_int32", lambda a: a.update(q=aligned((B, S_Q, H_Q, D), np.int32)), TypeError, r"^q: .*dtype"),
    ("k_cache_dtype_mismatch", lambda a: a.update(k_cache=aligned((4, PAGE, H_KV, D), np.float16)), TypeError,
     r"^k_cache: .*same dtype as q"),
    ("k_cache_both_fp32", lambda a: a.update(q=aligned((B, S_Q, H_Q, D), np.float32),
                                             k_cache=aligned((4, PAGE, H_KV, D), np.float32)), TypeError, r"^q: "),
    ("q_rank3", lambda a: a.update(q=aligned((B, H_Q, D), BF16)), ValueError, r"^q: .*4 dimensions"),
    ("q_rank5", lambda a: a.update(q=aligned((B, S_Q, H_Q, 1, D), BF16)), ValueError, r"^q: .*4 dimensions"),
    ("q_head_dim_512", lambda a: a.update(q=aligned((B, S_Q, H_Q, 512), BF16)), ValueError, r"^q: .*head_dim"),
    ("q_empty_batch", lambda a: a.update(q=aligned((0, S_Q, H_Q, D), BF16)), ValueError, r"^q: "),
    ("k_cache_head_dim_512", lambda a: a.update(k_cache=aligned((4, PAGE, H_KV, 512), BF16)), ValueError,
     r"^k_cache: .*head_dim"),
    ("k_cache_rank3", lambda a: a.update(k_cache=aligned((4 * PAGE, H_KV, D), BF16)), ValueError,
     r"^k_cache: .*4 dimensions"),
    ("head_dim_v_256", lambda a: a.update(head_dim_v=256), ValueError, r"^head_dim_v: .*512"),
    ("head_dim_v_576", lambda a: a.update(head_dim_v=576), ValueError, r"^head_dim_v: "),
    ("head_dim_v_float", lambda a: a.update(head_dim_v=512.0), ValueError, r"^head_dim_v: "),
    ("head_dim_v_none", lambda a: a.update(head_dim_v=None), ValueError, r"^head_dim_v: "),
    ("h_q_not_multiple_of_h_kv", lambda a: a.update(k_cache=aligned((4, PAGE, 3, D), BF16)), ValueError,
     r"heads_q \(16\) must be a multiple of k_cache heads_kv \(3\)"),
    ("page_48", lambda a: a.update(k_cache=aligned((4, 48, H_KV, D), BF16)), ValueError,
     r"^k_cache: .*page_block_size"),
    ("page_512", lambda a: a.update(k_cache=aligned((4, 512, H_KV, D), BF16)), ValueError,
     r"^k_cache: .*page_block_size"),
    ("k_cache_no_blocks", lambda a: a.update(k_cache=aligned((0, PAGE, H_KV, D), BF16)), ValueError, r"^k_cache: "),
    ("block_table_int64", lambda a: a.update(block_table=a["block_table"].astype(np.int64)), TypeError,
     r"^block_table: .*int32"),
    ("block_table_rank1", lambda a: a.update(block_table=a["block_table"].reshape(-1)), ValueError,
     r"^block_table: .*2 dimensions"),
    ("block_table_batch_mismatch", lambda a: a.update(block_table=np.zeros((B + 1, 2), np.int32)), ValueError,
     r"^block_table: .*batch"),
    ("block_table_no_columns", lambda a: a.update(block_table=np.zeros((B, 0), np.int32)), ValueError,
     r"^block_table: "),
    ("block_table_strided_columns", lambda a: a.update(block_table=np.zeros((B, 4), np.int32)[:, ::2]), ValueError,
     r"^block_table: .*contiguous"),
    ("cache_seqlens_float", lambda a: a.update(cache_seqlens=SEQLENS.astype(np.float32)), TypeError,
     r"^cache_seqlens: .*int32"),
    ("cache_seqlens_int64", lambda a: a.update(cache_seqlens=SEQLENS.astype(np.int64)), TypeError,
     r"^cache_seqlens: .*int32"),
    ("cache_seqlens_rank2", lambda a: a.update(cache_seqlens=SEQLENS.reshape(B, 1)), ValueError,
     r"^cache_seqlens: .*1 dimensions"),
    ("cache_seqlens_wrong_length", lambda a: a.update(cache_seqlens=np.array([1, 2, 3], np.int32)), ValueError,
     r"^cache_seqlens: .*batch"),
    ("cache_seqlens_strided", lambda a: a.update(cache_seqlens=np.array([100, 0, 30, 0], np.int32)[::2]),
     ValueError, r"^cache_seqlens: .*contiguous"),
    ("metadata_7_columns", lambda a: a.update(tile_scheduler_metadata=np.zeros((4, 7), np.int32)), ValueError,
     r"^tile_scheduler_metadata: .*\[num_sm_parts, 8\]"),
    ("metadata_rank1", lambda a: a.update(tile_scheduler_metadata=np.zeros(8, np.int32)), ValueError,
     r"^tile_scheduler_metadata: "),
    ("metadata_no_rows", lambda a: a.update(tile_scheduler_metadata=np.zeros((0, 8), np.int32)), ValueError,
     r"^tile_scheduler_metadata: "),
    ("metadata_float", lambda a: a.update(tile_scheduler_metadata=np.zeros((4, 8), np.float32)), TypeError,
     r"^tile_scheduler_metadata: .*int32"),
    ("metadata_transposed", lambda a: a.update(tile_scheduler_metadata=np.zeros((8, 4), np.int32).T), ValueError,
     r"^tile_scheduler_metadata: .*contiguous"),
    ("num_splits_length_b", lambda a: a.update(num_splits=np.zeros(B, np.int32)), ValueError,
     r"^num_splits: .*\[3\]"),
    ("num_splits_other_batch", lambda a: a.update(
        num_splits=flashmla_rt.get_mla_metadata(np.array([5, 6, 7], np.int32), S_Q * H_Q // H_KV, H_KV)[1]),
     ValueError, r"^num_splits: "),
    ("num_splits_int64", lambda a: a.update(num_splits=a["num_splits"].astype(np.int64)), TypeError,
     r"^num_splits: .*int32"),
    ("q_last_dim_strided", lambda a: a.update(q=_strided_last_dim_q()), ValueError, r"^q: .*last dimension"),
    ("q_strides_not_16B", lambda a: a.update(q=_misaligned_strides_q()), ValueError, r"^q: .*16 bytes"),
    ("k_cache_strides_not_16B", lambda a: a.update(k_cache=aligned((4, PAGE, H_KV, 580), BF16)[..., :D]),
     ValueError, r"^k_cache: .*16 bytes"),
    ("k_cache_last_dim_strided", lambda a: a.update(k_cache=aligned((4, PAGE, H_KV, 2 * D), BF16)[..., ::2]),
     ValueError, r"^k_cache: .*last dimension"),
    ("q_list", lambda a: a.update(q=a["q"].tolist()), TypeError, r"^q: .*got builtins\.list"),
    ("k_cache_list", lambda a: a.update(k_cache=[[0.0]]), TypeError, r"^k_cache: "),
    ("block_table_list", lambda a: a.update(block_table=[[0, 1], [2, 3]]), TypeError, r"^block_table: "),
    ("cache_seqlens_list", lambda a: a.update(cache_seqlens=[100, 30]), TypeError, r"^cache_seqlens: "),
    ("metadata_none", lambda a: a.update(tile_scheduler_metadata=None), TypeError, r"^tile_scheduler_metadata: "),
    ("num_splits_tuple", lambda a: a.update(num_splits=(0, 1, 2)), TypeError, r"^num_splits: "),
]


@pytest.mark.parametrize("mutate,exc,pattern", [c[1:] for c in BAD_DECODE], ids=[c[0] for c in BAD_DECODE])
def test_bad_decode_argument(mutate, exc, pattern):
    args = valid_args()
    mutate(args)
    with pytest.raises(exc, match=pattern):
        call(args)


def test_misaligned_data_pointer():
    base = aligned((B * S_Q * H_Q * D + 8,), BF16)
    q = base[1:1 + B * S_Q * H_Q * D].reshape(B, S_Q, H_Q, D)        # 2-byte offset from a 64-byte boundary
    args = valid_args()
    args["q"] = q
    with pytest.raises(ValueError, match=r"^q: .*16-byte aligned"):
        call(args)


@pytest.mark.parametrize("dtype", [BF16, np.float16], ids=["bf16", "fp16"])
def test_valid_numpy_call_needs_cuda_device(dtype):
    with pytest.raises(ValueError, match=r"^q: expected a tensor on a CUDA device, got host memory"):
        call(valid_args(dtype))


def test_valid_numpy_call_with_gqa_and_options_needs_cuda_device():
    args = valid_args()
    args["k_cache"] = aligned((4, PAGE, 2, D), BF16)        # h_q = 16, h_kv = 2
    args["tile_scheduler_metadata"], args["num_splits"] = flashmla_rt.get_mla_metadata(SEQLENS, S_Q * 8, 2)
    with pytest.raises(ValueError, match="host memory"):
        flashmla_rt.flash_mla_with_kvcache(**args, softmax_scale=0.1, causal=True)


@pytest.mark.parametrize("page", (16, 32, 64, 128, 256))
def test_all_supported_page_sizes_pass_validation(page):
    args = valid_args()
    args["k_cache"] = aligned((2, page, H_KV, D), BF16)
    with pytest.raises(ValueError, match="host memory"):
        call(args)


# ---- get_mla_metadata -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seqlens,rows,h_kv", [
    ([100, 30], 32, 1),
    ([1], 1, 1),
    ([0, 0, 0], 16, 1),
    ([4096, 1, 65, 64, 63, 131072], 128, 1),
    ([777] * 37, 8, 2),
    (list(range(0, 5000, 97)), 64, 4),
])
def test_numpy_metadata_is_the_twin_plan(seqlens, rows, h_kv):
    s = np.asarray(seqlens, dtype=np.int32)
    meta, splits = flashmla_rt.get_mla_metadata(s, rows, h_kv)
    ref_meta, ref_splits = schedule.plan(s, schedule.num_sm_parts(132, rows, h_kv))
    assert isinstance(meta, np.ndarray) and isinstance(splits, np.ndarray)
    assert meta.dtype == np.int32 and splits.dtype == np.int32
    assert meta.shape == (schedule.num_sm_parts(132, rows, h_kv), 8) and splits.shape == (len(seqlens) + 1,)
    np.testing.assert_array_equal(meta, ref_meta)
    np.testing.assert_array_equal(splits, ref_splits)


def test_numpy_metadata_accepts_numpy_ints():
    meta, splits = flashmla_rt.get_mla_metadata(SEQLENS, np.int64(32), np.int32(1))
    ref_meta, ref_splits = schedule.plan(SEQLENS, schedule.num_sm_parts(132, 32, 1))
    np.testing.assert_array_equal(meta, ref_meta)
    np.testing.assert_array_equal(splits, ref_splits)


BAD_METADATA = [
    ("rows_float", dict(num_heads_per_head_k=16.0), TypeError, r"^num_heads_per_head_k: .*int"),
    ("rows_str", dict(num_heads_per_head_k="16"), TypeError, r"^num_heads_per_head_k: "),
    ("rows_bool", dict(num_heads_per_head_k=True), TypeError, r"^num_heads_per_head_k: "),
    ("rows_none", dict(num_heads_per_head_k=None), TypeError, r"^num_heads_per_head_k: "),
    ("rows_zero", dict(num_heads_per_head_k=0), ValueError, r"^num_heads_per_head_k: .*>= 1"),
    ("h_kv_zero", dict(num_heads_k=0), ValueError, r"^num_heads_k: .*>= 1"),
    ("h_kv_negative", dict(num_heads_k=-1), ValueError, r"^num_heads_k: "),
    ("h_kv_float", dict(num_heads_k=1.5), TypeError, r"^num_heads_k: "),
    ("seqlens_float", dict(cache_seqlens=SEQLENS.astype(np.float32)), TypeError, r"^cache_seqlens: .*int32"),
    ("seqlens_int64", dict(cache_seqlens=SEQLENS.astype(np.int64)), TypeError, r"^cache_seqlens: .*int32"),
    ("seqlens_rank2", dict(cache_seqlens=SEQLENS.reshape(1, B)), ValueError, r"^cache_seqlens: .*1 dimensions"),
    ("seqlens_empty", dict(cache_seqlens=np.zeros(0, np.int32)), ValueError, r"^cache_seqlens: .*at least one"),
    ("seqlens_strided", dict(cache_seqlens=np.arange(8, dtype=np.int32)[::2]), ValueError,
     r"^cache_seqlens: .*contiguous"),
    ("seqlens_list", dict(cache_seqlens=[100, 30]), TypeError, r"^cache_seqlens: .*builtins\.list"),
    ("seqlens_int", dict(cache_seqlens=100), TypeError, r"^cache_seqlens: "),
]


@pytest.mark.parametrize("override,exc,pattern", [c[1:] for c in BAD_METADATA], ids=[c[0] for c in BAD_METADATA])
def test_bad_metadata_argument(override, exc, pattern):
    kwargs = dict(cache_seqlens=SEQLENS.copy(), num_heads_per_head_k=32, num_heads_k=1)
    kwargs.update(override)
    with pytest.raises(exc, match=pattern):
        flashmla_rt.get_mla_metadata(**kwargs)

def test_too_many_query_rows_per_request():
    # 65,535 combine CTAs x 8 rows is the limit; a broadcast (zero-stride) view keeps the array small.
    args = valid_args()
    q = np.lib.stride_tricks.as_strided(args["q"], shape=(B, 4100, 128, D), strides=(0, 0, 0, 2))
    args["q"] = q
    with pytest.raises(ValueError, match=r"^q: seqlen_q \* heads_q = 524800 exceeds"):
        call(args)
