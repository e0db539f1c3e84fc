"""GPU correctness of get_mla_metadata / flash_mla_with_kvcache against the NumPy reference.

Every decode writes into preallocated out/lse filled with NaN (anything left unwritten fails the check),
then repeats the call without out=/lse= and requires the same bits (no-out path + determinism).
Inputs carry NaN in every cache slot that must not be read and 2147480000 in block-table entries past
each request's last page (see gpu_cases), so reading out of range shows up as NaN or a fault.

Grid (FlashMLA's HEAD test, semantics doc §4.2, pruned to run in ~3 minutes): the full product of
b {1, 2, 6} x s_q {1, 2, 4} x (h_q, h_kv) x s_k {20, 140, 4096}, with (varlen, causal, dtype, page size)
cycled through all 40 combinations; a sample of b {64, 128}; FlashMLA's b=128 corner case with half the
requests empty; all-empty batches; explicit lengths around page/block boundaries.
"""
from itertools import product

import numpy as np
import pytest

import gpu_cases as gc
from flashmla_rt import schedule

pytestmark = pytest.mark.gpu

HEADS = ((1, 1), (3, 1), (16, 1), (63, 1), (64, 1), (128, 1), (16, 2), (64, 2), (128, 2))
# (varlen, causal, dtype, page): 40 combinations, cycled over the grid with a stride coprime to 40 so
# that every run of 40 consecutive cases (and every s_k / b slice of the grid) sees all of them.
SECONDARY = tuple(product((False, True), (False, True), gc.DTYPES, gc.PAGE_SIZES))


def case_id(b, s_q, h_q, h_kv, s_k, varlen, causal, dtype, page):
    return (f"b{b}-sq{s_q}-hq{h_q}-hkv{h_kv}-sk{s_k}{'var' if varlen else ''}-{'causal' if causal else 'full'}"
            f"-{'bf16' if dtype == 'bfloat16' else 'fp16'}-p{page}")


def small_grid():
    params = []
    for i, (b, s_q, (h_q, h_kv), s_k) in enumerate(product((1, 2, 6), (1, 2, 4), HEADS, (20, 140, 4096))):
        varlen, causal, dtype, page = SECONDARY[(i * 17) % len(SECONDARY)]
        args = (b, s_q, h_q, h_kv, s_k, varlen, causal, dtype, page)
        params.append(pytest.param(*args, id=case_id(*args)))
    return params


# Large batches: a hand-picked sample covering every head count, length, page size and dtype once or more.
LARGE = [
    (64, 1, 128, 1, 4096, True, False, "bfloat16", 64),
    (64, 2, 64, 2, 4096, True, True, "float16", 32),
    (64, 4, 63, 1, 20, True, True, "bfloat16", 16),
    (64, 1, 3, 1, 140, False, False, "float16", 256),
    (64, 4, 128, 1, 4096, False, True, "float16", 128),
    (128, 1, 16, 1, 4096, False, False, "bfloat16", 256),
    (128, 4, 16, 2, 140, True, True, "float16", 16),
    (128, 2, 128, 1, 140, False, True, "bfloat16", 128),
    (128, 1, 1, 1, 4096, True, False, "float16", 64),
    (128, 2, 128, 2, 4096, True, True, "bfloat16", 32),
]

# FlashMLA's corner case: b=128, s_q=2, s_k=4096 varlen, ~50 % of the requests empty.
CORNER = [(h_q, h_kv, causal, dtype, page)
          for (h_q, h_kv), causal, (dtype, page) in zip(
              [(1, 1), (16, 1), (64, 2), (128, 1)] * 2, [False] * 4 + [True] * 4,
              [("bfloat16", 64), ("float16", 16), ("bfloat16", 256), ("float16", 128),
               ("float16", 64), ("bfloat16", 32), ("float16", 256), ("bfloat16", 64)])]


def decode_and_check(case, context, repeat=True, out_tol=gc.OUT_TOL):
    """Poisoned out=/lse= run checked against the reference; then the no-out path must give the same bits."""
    out, lse = gc.poisoned_outputs(case)
    ret_out, ret_lse = gc.run(case, out=out, lse=lse)
    # The caller's buffers are the results (no hidden copy).
    assert ret_out.data_ptr() == out.data_ptr() and ret_lse.data_ptr() == lse.data_ptr(), context
    out_ref, lse_ref = gc.reference(case)
    gc.check_close(out, lse, out_ref, lse_ref, case.dtype, context, out_tol=out_tol)
    if repeat:
        out2, lse2 = gc.run(case)
        assert tuple(out2.shape) == (case.b, case.s_q, case.h_q, gc.DV) and out2.dtype == case.q.dtype
        assert tuple(lse2.shape) == (case.b, case.h_q, case.s_q) and str(lse2.dtype) == "torch.float32"
        gc.assert_bitwise_equal(out2, out, f"{context}: out without out=")
        gc.assert_bitwise_equal(lse2, lse, f"{context}: lse without lse=")
    return out, lse


# --------------------------------------------------------------------------------------- the grid
@pytest.mark.parametrize("b, s_q, h_q, h_kv, s_k, varlen, causal, dtype, page", small_grid())
def test_grid(torch, b, s_q, h_q, h_kv, s_k, varlen, causal, dtype, page):
    seqlens = gc.lengths(b, s_k, s_q, varlen, seed=b * 1000 + s_q * 100 + h_q)
    case = gc.make_case(b, s_q, h_q, h_kv, seqlens, page=page, dtype=dtype, causal=causal, seed=h_q + s_k)
    decode_and_check(case, f"seqlens={seqlens.tolist()}")


@pytest.mark.parametrize("b, s_q, h_q, h_kv, s_k, varlen, causal, dtype, page",
                         [pytest.param(*p, id=case_id(*p)) for p in LARGE])
def test_large_batch(torch, b, s_q, h_q, h_kv, s_k, varlen, causal, dtype, page):
    seqlens = gc.lengths(b, s_k, s_q, varlen, seed=7)
    case = gc.make_case(b, s_q, h_q, h_kv, seqlens, page=page, dtype=dtype, causal=causal, seed=11)
    decode_and_check(case, f"b={b} lengths {seqlens.min()}..{seqlens.max()}")


@pytest.mark.parametrize("h_q, h_kv, causal, dtype, page",
                         [pytest.param(*p, id=case_id(128, 2, p[0], p[1], 4096, True, *p[2:]) + "-halfzero")
                          for p in CORNER])
def test_corner_half_empty(torch, h_q, h_kv, causal, dtype, page):
    seqlens = gc.lengths(128, 4096, 2, varlen=True, seed=3, zero_frac=0.5)
    assert (seqlens == 0).sum() == 64
    case = gc.make_case(128, 2, h_q, h_kv, seqlens, page=page, dtype=dtype, causal=causal, seed=5)
    decode_and_check(case, "corner b=128 half empty")


@pytest.mark.parametrize("b, s_q, h_q, h_kv, causal, dtype, page", [
    (1, 1, 3, 1, False, "bfloat16", 64), (1, 4, 128, 2, True, "float16", 16),
    (6, 1, 128, 2, False, "float16", 256), (6, 4, 3, 1, True, "bfloat16", 32),
    (128, 1, 3, 1, False, "bfloat16", 128), (128, 4, 128, 2, True, "float16", 64),
])
def test_all_empty(torch, b, s_q, h_q, h_kv, causal, dtype, page):
    """cache_seqlens all 0: out exactly 0 and lse +inf everywhere (checked by position and value)."""
    case = gc.make_case(b, s_q, h_q, h_kv, np.zeros(b, np.int32), page=page, dtype=dtype, causal=causal)
    out, lse = decode_and_check(case, "all empty")
    assert not bool(out.any()) and bool(torch.isposinf(lse).all())


EDGE_LENGTHS = [0, 1, 2, 3, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257,
                511, 512, 513, 1000, 4095, 4096, 4097]


@pytest.mark.parametrize("page", gc.PAGE_SIZES)
@pytest.mark.parametrize("s_q, causal, h_q, h_kv", [(1, False, 16, 1), (4, True, 64, 2)])
def test_edge_lengths(torch, page, s_q, causal, h_q, h_kv):
    """Lengths at page / 64-token-block boundaries, incl. 0 and (causal) fewer keys than query tokens."""
    seqlens = np.array(EDGE_LENGTHS, np.int32)
    case = gc.make_case(len(seqlens), s_q, h_q, h_kv, seqlens, page=page, dtype="bfloat16", causal=causal,
                        seed=page)
    decode_and_check(case, "edge lengths")


@pytest.mark.parametrize("dtype", gc.DTYPES)
@pytest.mark.parametrize("s_q, h_q, h_kv, causal", [(1, 64, 1, False), (2, 16, 2, True)])
def test_unit_normal_data(torch, dtype, s_q, h_q, h_kv, causal):
    """N(0, 1) inputs (FlashMLA's original test data): larger logits, peakier softmax."""
    seqlens = gc.lengths(6, 4096, s_q, varlen=True, seed=21)
    case = gc.make_case(6, s_q, h_q, h_kv, seqlens, dtype=dtype, causal=causal, dist="randn", seed=22)
    decode_and_check(case, "N(0,1) data")


# ------------------------------------------------------------------------------------- metadata
METADATA_ROWS = [(1, 1), (16, 1), (64, 1), (65, 1), (128, 1), (256, 1), (512, 1), (64, 2), (128, 2), (512, 8),
                 (4096, 2)]
METADATA_SEQLENS = {
    "one-empty": [0],
    "one-short": [1],
    "one-long": [65536],
    "uniform-b128": [4096] * 128,
    "uniform-b128-8192": [8192] * 128,       # whole-requests plan on 66 and 33 parts
    "varlen-b64": gc.lengths(64, 4096, 1, varlen=True, seed=1).tolist(),
    "half-empty-b128": gc.lengths(128, 4096, 2, varlen=True, seed=3, zero_frac=0.5).tolist(),
    "small-b1000": np.random.default_rng(2).integers(0, 300, 1000).tolist(),
    "b5000": np.random.default_rng(3).integers(0, 5000, 5000).tolist(),
    "mixed-huge": [0, 1 << 20, 5, 0, 100000, 64, 65],
}


def sm_count(torch):
    return torch.cuda.get_device_properties(0).multi_processor_count


@pytest.mark.parametrize("name", list(METADATA_SEQLENS))
def test_metadata_matches_numpy_plan(torch, name):
    """The device scheduler must produce exactly what the NumPy twin plans (same parts count too)."""
    import flashmla_rt
    seqlens = np.array(METADATA_SEQLENS[name], np.int32)
    dev_seqlens = torch.as_tensor(seqlens, device="cuda")
    for rows, h_kv in METADATA_ROWS:
        meta, splits = flashmla_rt.get_mla_metadata(dev_seqlens, rows, h_kv)
        assert isinstance(meta, torch.Tensor) and isinstance(splits, torch.Tensor)
        assert meta.device == dev_seqlens.device and splits.device == dev_seqlens.device
        assert meta.dtype == torch.int32 and splits.dtype == torch.int32
        parts = meta.shape[0]
        assert tuple(meta.shape) == (parts, 8) and tuple(splits.shape) == (len(seqlens) + 1,)
        assert parts == schedule.num_sm_parts(sm_count(torch), rows, h_kv), (rows, h_kv)
        want_meta, want_splits = schedule.plan(seqlens, parts)
        np.testing.assert_array_equal(meta.cpu().numpy(), want_meta, err_msg=f"metadata rows={rows} h_kv={h_kv}")
        np.testing.assert_array_equal(splits.cpu().numpy(), want_splits, err_msg=f"num_splits rows={rows} h_kv={h_kv}")


def test_metadata_graph_capturable(torch):
    """get_mla_metadata inside a CUDA graph; replays with new cache_seqlens values must re-plan."""
    import flashmla_rt
    rng = np.random.default_rng(4)
    b, rows, h_kv = 64, 128, 1
    static = torch.as_tensor(rng.integers(0, 4096, b).astype(np.int32), device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):                               # warm-up off the default stream (torch docs)
        flashmla_rt.get_mla_metadata(static, rows, h_kv)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        meta, splits = flashmla_rt.get_mla_metadata(static, rows, h_kv)
    for trial in range(3):
        seqlens = rng.integers(0, 20000, b).astype(np.int32)
        if trial == 2:
            seqlens[::2] = 0
        static.copy_(torch.as_tensor(seqlens))
        meta.fill_(-7)
        splits.fill_(-7)
        graph.replay()
        torch.cuda.synchronize()
        want_meta, want_splits = schedule.plan(seqlens, meta.shape[0])
        np.testing.assert_array_equal(meta.cpu().numpy(), want_meta, err_msg=f"replay {trial}")
        np.testing.assert_array_equal(splits.cpu().numpy(), want_splits, err_msg=f"replay {trial}")


# ------------------------------------------------------------------------------- split / no split
@pytest.mark.parametrize("s_k, s_q, h_q, h_kv, causal, page", [
    (65536, 1, 16, 1, False, 64), (32768, 2, 128, 2, True, 256), (20000, 4, 3, 1, True, 16),
    (65536, 1, 128, 1, True, 64), (30000, 1, 64, 2, False, 32)])
def test_forced_split(torch, s_k, s_q, h_q, h_kv, causal, page):
    """One long request is cut across (nearly) every part, so the combine kernel merges many partials. On a
    132-SM GPU: 132 on the first and third case (more than the wide combine's one-trip merge takes), 33 on the
    second, 66 on the last two (b = 1, h_q = 128 as in the bench's row 24; two KV heads)."""
    import flashmla_rt
    case = gc.make_case(1, s_q, h_q, h_kv, [s_k], page=page, causal=causal, seed=s_k)
    _, splits = flashmla_rt.get_mla_metadata(case.cache_seqlens, case.rows, h_kv)
    parts = schedule.num_sm_parts(sm_count(torch), case.rows, h_kv)
    n_splits = int(splits[1].item())
    assert n_splits >= parts // 2, f"expected the request to be split ~{parts} ways, got {n_splits}"
    decode_and_check(case, f"b=1 s_k={s_k} split {n_splits} ways")


def test_no_split(torch):
    """Many short requests: each one is a single chunk (decode writes straight to out, combine skips it)."""
    import flashmla_rt
    seqlens = np.full(64, 64, np.int32)
    case = gc.make_case(64, 1, 16, 1, seqlens, seed=9)
    _, splits = flashmla_rt.get_mla_metadata(case.cache_seqlens, case.rows, 1)
    np.testing.assert_array_equal(np.diff(splits.cpu().numpy()), 1)
    decode_and_check(case, "no split")


@pytest.mark.parametrize("s_q, h_q", [(1, 16), (1, 64), (2, 128)])
def test_best_fit_reordered_plan(torch, s_q, h_q):
    """A varlen batch that best fit plans out of request order and with cuts (narrow, one-m-block seesaw and
    four m-blocks): parts walk the metadata's request order, and cut requests are merged by the combine."""
    import flashmla_rt
    b, s_k = (100, 1000) if h_q < 128 else (40, 2000)      # 25 and 11 requests cut on a 132-SM GPU
    seqlens = gc.lengths(b, s_k, s_q, varlen=True, seed=21, zero_frac=0.05)
    case = gc.make_case(b, s_q, h_q, 1, seqlens, causal=True, seed=21)
    meta, splits = flashmla_rt.get_mla_metadata(case.cache_seqlens, case.rows, 1)
    order = schedule.request_order(meta.cpu().numpy(), b)
    assert int(meta[0, 5].item()) == 1 and order != list(range(b)), "expected a reordered plan"
    assert int((np.diff(splits.cpu().numpy()) > 1).sum()) > 0, "expected some cut requests"
    decode_and_check(case, f"best fit b={b} s_q={s_q} h_q={h_q}")


# ------------------------------------------------------------------------------------- options
@pytest.mark.parametrize("scale", [0.5, 1 / 192 ** 0.5, 0.01, 3.0])
def test_custom_softmax_scale(torch, scale):
    seqlens = gc.lengths(6, 4096, 2, varlen=True, seed=8)
    case = gc.make_case(6, 2, 64, 1, seqlens, causal=True, softmax_scale=scale, seed=8)
    decode_and_check(case, f"softmax_scale={scale}")


@pytest.mark.parametrize("dtype", gc.DTYPES)
@pytest.mark.parametrize("scale", [0.1, 0.5])
def test_peaked_softmax(torch, scale, dtype):
    """N(0, 1) data with a large scale: logits of std 2.4-12, a nearly one-hot softmax (max subtraction and
    rescaling across splits must be exact). lse keeps FlashMLA's tolerance; out is checked by FlashMLA's
    original cosine criterion only: softmax weights rounded to 16 bits before P.V (as FlashMLA does) cost
    up to ~0.003 absolute where large terms cancel, beyond the elementwise tolerance meant for randn/10."""
    seqlens = gc.lengths(6, 4096, 2, varlen=True, seed=8)
    case = gc.make_case(6, 2, 64, 1, seqlens, dtype=dtype, causal=True, dist="randn", softmax_scale=scale, seed=8)
    decode_and_check(case, f"N(0,1) softmax_scale={scale}", out_tol=(np.inf, np.inf, 1e-5))


def strided_variants(torch):
    """(name, transform(case) -> case): the same data presented through non-contiguous views."""
    def q_head_slice(case):                 # q = heads [h_q, 2 h_q) of a tensor with 2 h_q heads
        big = torch.empty((case.b, case.s_q, 2 * case.h_q, gc.D), dtype=case.q.dtype, device=case.q.device)
        big[:, :, case.h_q:] = case.q
        case.q = big[:, :, case.h_q:]
        return case

    def q_token_slice(case):                # q = tokens [0, s_q) of a tensor with s_q + 3 tokens
        big = torch.empty((case.b, case.s_q + 3, case.h_q, gc.D), dtype=case.q.dtype, device=case.q.device)
        big[:, :case.s_q] = case.q
        case.q = big[:, :case.s_q]
        return case

    def q_transposed(case):                 # q stored [b, h_q, s_q, d], viewed [b, s_q, h_q, d]
        case.q = case.q.transpose(1, 2).contiguous().transpose(1, 2)
        return case

    def k_head_slice(case):                 # k_cache = KV head 1 of a pool holding 2 KV heads per token
        big = torch.full((*case.k_cache.shape[:2], 2 * case.h_kv, gc.D), float("nan"),
                         dtype=case.k_cache.dtype, device=case.k_cache.device)
        big[:, :, case.h_kv:] = case.k_cache
        case.k_cache = big[:, :, case.h_kv:]
        return case

    def table_column_slice(case):           # block_table = first columns of a wider table (row stride > width)
        wide = torch.full((case.b, case.block_table.shape[1] + 5), -1, dtype=torch.int32, device="cuda")
        wide[:, :case.block_table.shape[1]] = case.block_table
        case.block_table = wide[:, :case.block_table.shape[1]]
        return case

    return {"q_head_slice": q_head_slice, "q_token_slice": q_token_slice, "q_transposed": q_transposed,
            "k_head_slice": k_head_slice, "table_column_slice": table_column_slice}


@pytest.mark.parametrize("variant", ["q_head_slice", "q_token_slice", "q_transposed", "k_head_slice",
                                     "table_column_slice"])
def test_strided_inputs(torch, variant):
    seqlens = gc.lengths(6, 140, 4, varlen=True, seed=12)
    case = gc.make_case(6, 4, 16, 1, seqlens, page=32, causal=True, seed=12)
    case = strided_variants(torch)[variant](case)
    assert not (case.q.is_contiguous() and case.k_cache.is_contiguous() and case.block_table.is_contiguous())
    decode_and_check(case, variant)


@pytest.mark.parametrize("extra_cols, garbage", [(9, "bad_page"), (3, "random")])
def test_block_table_extra_columns(torch, extra_cols, garbage):
    """A block table wider than needed, whose unused entries hold 2147480000 or arbitrary int32 values."""
    seqlens = gc.lengths(6, 4096, 2, varlen=True, seed=13)
    seqlens[2] = 0
    case = gc.make_case(6, 2, 64, 2, seqlens, page=64, causal=True, extra_cols=extra_cols, garbage=garbage,
                        seed=13)
    decode_and_check(case, f"{extra_cols} extra columns, {garbage} entries")


def test_deterministic(torch):
    """Same call, same bits: split results are combined in a fixed order (no atomics races)."""
    seqlens = gc.lengths(6, 4096, 2, varlen=True, seed=14)
    case = gc.make_case(6, 2, 128, 1, seqlens, causal=True, seed=14)
    first_out, first_lse = decode_and_check(case, "determinism", repeat=False)
    for _ in range(3):
        out, lse = gc.poisoned_outputs(case)
        gc.run(case, out=out, lse=lse)
        gc.assert_bitwise_equal(out, first_out, "out of a repeated call")
        gc.assert_bitwise_equal(lse, first_lse, "lse of a repeated call")


# --------------------------------------------------------------------------------------- both kernels on few rows
@pytest.mark.parametrize("kernel", ["narrow", "seesaw"])
@pytest.mark.parametrize("s_q, h_q, h_kv, causal, page, dtype", [
    (1, 16, 1, False, 64, "bfloat16"), (2, 16, 1, True, 16, "float16"), (4, 16, 2, True, 256, "bfloat16"),
    (1, 3, 1, False, 32, "float16"), (2, 8, 1, True, 128, "bfloat16")])
def test_few_rows_both_kernels(torch, monkeypatch, fresh_plans, kernel, s_q, h_q, h_kv, causal, page, dtype):
    """rows = s_q * h_q / h_kv <= 32 runs the narrow kernel; FLASHMLA_RT_DECODE_KERNEL=seesaw forces the other.
    Both must match the reference on lengths around page and block boundaries."""
    from flashmla_rt import kernels
    if kernel == "seesaw":
        monkeypatch.setenv("FLASHMLA_RT_DECODE_KERNEL", "seesaw")
    assert kernels.decode_variant(s_q * h_q // h_kv).name.startswith(kernel)
    seqlens = np.array(EDGE_LENGTHS, np.int32)
    case = gc.make_case(len(seqlens), s_q, h_q, h_kv, seqlens, page=page, dtype=dtype, causal=causal, seed=page + h_q)
    decode_and_check(case, f"{kernel} kernel, edge lengths")
