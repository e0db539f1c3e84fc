"""CPU tests of flashmla_rt.reference, the executable spec the GPU kernels are compared against.

(a) against an independent dense implementation (own paged cache built from a dense K tensor,
    FlashMLA's tril(s_k - s_q) additive mask), with NaN-poisoned unused slots/pages;
(b) split-then-combine: per-chunk partials from the scheduler's chunks, merged by combine_splits,
    must reproduce the unsplit result (this is what the decode + combine kernels do);
(c) ml_dtypes.bfloat16 inputs.
"""
import ml_dtypes
import numpy as np
import pytest

from flashmla_rt import schedule
from flashmla_rt.reference import HEAD_DIM_K, HEAD_DIM_V, combine_splits, mla_decode_reference
from gpu_cases import BAD_PAGE

D, DV = HEAD_DIM_K, HEAD_DIM_V


def make_case(rng, seqlens, s_q, h_q, h_kv, page, dtype=np.float32):
    """Dense K [b, max_len, h_kv, D] scattered into a NaN-filled paged cache via a random permutation."""
    seqlens = np.asarray(seqlens, dtype=np.int32)
    b, max_len = len(seqlens), max(int(seqlens.max()), 1)
    q = rng.standard_normal((b, s_q, h_q, D)).astype(dtype)
    k_dense = rng.standard_normal((b, max_len, h_kv, D)).astype(dtype)
    pages_per_req = -(-seqlens // page)
    width = int(pages_per_req.max()) + 1                  # always at least one bogus entry per row
    n_pages = int(pages_per_req.sum()) + 3                 # a few pages nobody owns (stay NaN)
    k_cache = np.full((n_pages, page, h_kv, D), np.nan, dtype=dtype)
    block_table = np.full((b, width), BAD_PAGE, dtype=np.int32)
    perm = rng.permutation(n_pages)
    nxt = 0
    for i, n in enumerate(seqlens):
        for j in range(pages_per_req[i]):
            pid = perm[nxt]
            nxt += 1
            block_table[i, j] = pid
            tok = k_dense[i, j * page:min((j + 1) * page, n)]
            k_cache[pid, :len(tok)] = tok                  # tail of the last page stays NaN
    return q, k_dense, k_cache, block_table, seqlens


def dense_attention(q, k_dense, seqlens, causal, scale=D ** -0.5):
    """Straightforward softmax attention with an explicit -inf mask; rows with no key -> 0 / +inf."""
    q = q.astype(np.float64)
    b, s_q, h_q, _ = q.shape
    h_kv = k_dense.shape[2]
    out = np.zeros((b, s_q, h_q, DV))
    lse = np.full((b, h_q, s_q), np.inf)
    for i in range(b):
        s_k = int(seqlens[i])
        if s_k == 0:
            continue
        k = np.repeat(k_dense[i, :s_k].astype(np.float64), h_q // h_kv, axis=1)   # [s_k, h_q, D]
        scores = np.einsum("shd,khd->hsk", q[i], k) * scale
        if causal:   # FlashMLA forces causal off for s_q == 1; tril(k=s_k-1) is all ones anyway
            allowed = np.tril(np.ones((s_q, s_k)), k=s_k - s_q).astype(bool)
            scores = scores + np.where(allowed, 0.0, -np.inf)
        m = scores.max(axis=-1, keepdims=True)
        live = np.isfinite(m[..., 0])                                               # [h_q, s_q]
        p = np.exp(scores - np.where(np.isfinite(m), m, 0.0))
        denom = p.sum(axis=-1, keepdims=True)
        o = np.einsum("hsk,khd->shd", p / np.where(denom > 0, denom, 1.0), k[..., :DV])
        out[i] = np.where(live.T[..., None], o, 0.0)
        lse[i] = np.where(live, m[..., 0] + np.log(np.where(denom[..., 0] > 0, denom[..., 0], 1.0)),
                          np.inf)
    return out, lse


def assert_matches(got, want, rtol=1e-5, atol=1e-6):
    out, lse = got
    assert out.dtype == np.float32 and lse.dtype == np.float32
    assert np.all(np.isfinite(out)), "NaN/inf leaked into out (unused cache slots must not be read)"
    assert not np.any(np.isnan(lse)) and not np.any(lse == -np.inf)
    np.testing.assert_allclose(out, want[0], rtol=rtol, atol=atol)
    np.testing.assert_array_equal(np.isinf(lse), np.isinf(want[1]))   # +inf rows match exactly
    np.testing.assert_allclose(lse, want[1], rtol=rtol, atol=atol)


SEQLEN_SETS = {"edge": [0, 1, 20, 140], "varlen": [37, 0, 129, 64, 3]}


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("s_q", [1, 2, 4])
@pytest.mark.parametrize("h_q, h_kv", [(1, 1), (3, 1), (16, 1), (16, 2)])
@pytest.mark.parametrize("page", [16, 64, 256])
@pytest.mark.parametrize("lens", sorted(SEQLEN_SETS))
def test_against_dense(lens, page, h_q, h_kv, s_q, causal):
    # Deterministic per-case seed (str hash() is randomised per process, so don't use it).
    rng = np.random.default_rng([len(lens), page, h_q, h_kv, s_q, int(causal)])
    q, k_dense, k_cache, bt, seqlens = make_case(rng, SEQLEN_SETS[lens], s_q, h_q, h_kv, page)
    got = mla_decode_reference(q, k_cache, bt, seqlens, causal=causal)
    want = dense_attention(q, k_dense, seqlens, causal)
    assert_matches(got, want)
    # Rows with no attendable key: length-0 requests, and (causal) query tokens s < s_q - seqlen.
    for i, n in enumerate(seqlens):
        dead = s_q if n == 0 else (max(s_q - n, 0) if causal and s_q > 1 else 0)
        assert np.all(got[0][i, :dead] == 0) and np.all(got[1][i, :, :dead] == np.inf)
        assert np.all(np.isfinite(got[1][i, :, dead:]))


def test_custom_scale_and_all_empty():
    rng = np.random.default_rng(7)
    q, k_dense, k_cache, bt, seqlens = make_case(rng, [50, 3], 2, 4, 1, 16)
    got = mla_decode_reference(q, k_cache, bt, seqlens, softmax_scale=0.3, causal=True)
    assert_matches(got, dense_attention(q, k_dense, seqlens, True, scale=0.3))
    q, k_dense, k_cache, bt, seqlens = make_case(rng, [0, 0], 1, 2, 1, 64)
    out, lse = mla_decode_reference(q, k_cache, bt, seqlens)
    assert np.all(out == 0) and np.all(lse == np.inf)


def chunk_partial(q_i, k_i, n, first_blk, end_blk, causal, h_kv):
    """Normalised partial (out [s_q, h_q, DV], natural-log lse [s_q, h_q]) over 64-token blocks
    [first_blk, end_blk) of one request, with the causal limit applied per query token."""
    s_q, h_q, _ = q_i.shape
    out = np.zeros((s_q, h_q, DV))
    lse = np.full((s_q, h_q), -np.inf)                     # empty chunk: weight 0 in the merge
    k = np.repeat(k_i.astype(np.float64), h_q // h_kv, axis=1)
    for s in range(s_q):
        lim = n - (s_q - 1 - s) if causal and s_q > 1 else n
        lo, hi = first_blk * schedule.BLOCK_N, min(end_blk * schedule.BLOCK_N, lim)
        if hi <= lo:
            continue
        sc = np.einsum("hd,khd->hk", q_i[s].astype(np.float64), k[lo:hi]) * D ** -0.5
        m = sc.max(axis=-1, keepdims=True)
        p = np.exp(sc - m)
        out[s] = np.einsum("hk,khd->hd", p / p.sum(-1, keepdims=True), k[lo:hi, :, :DV])
        lse[s] = m[:, 0] + np.log(p.sum(-1))
    return out, lse


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("parts", [1, 3, 7, 33, 132])
def test_split_then_combine(parts, causal):
    rng = np.random.default_rng(parts + 100 * causal)
    s_q, h_q, h_kv = 2, 4, 2
    q, k_dense, k_cache, bt, seqlens = make_case(rng, [0, 1, 65, 700, 1500, 64], s_q, h_q, h_kv, 64)
    meta, num_splits = schedule.plan(seqlens, parts)
    n_slots = int(num_splits[-1])
    part_out = np.full((n_slots, s_q, h_q, DV), np.nan)     # NaN: a slot left unwritten would show
    part_lse = np.full((n_slots, s_q, h_q), np.nan)
    for _, req, first, last, split in schedule.chunks(meta, seqlens):
        slot = num_splits[req] + split
        part_out[slot], part_lse[slot] = chunk_partial(q[req], k_dense[req], int(seqlens[req]),
                                                       first, last, causal, h_kv)
    ref_out, ref_lse = mla_decode_reference(q, k_cache, bt, seqlens, causal=causal)
    for i in range(len(seqlens)):
        sl = slice(num_splits[i], num_splits[i + 1])
        out, lse = combine_splits(part_out[sl], part_lse[sl])               # [s_q, h_q, ...]
        np.testing.assert_allclose(out, ref_out[i], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(lse.T, ref_lse[i], rtol=1e-6, atol=1e-6)
    if parts >= 33:
        assert n_slots > len(seqlens), "the case should actually split some requests"


def test_combine_splits_conventions():
    # Merging one partial is the identity; all-empty -> out 0, lse +inf; -inf partials get weight 0.
    rng = np.random.default_rng(3)
    o = rng.standard_normal((2, 3, 5))
    lse = np.array([[0.5, -np.inf, 2.0], [-np.inf, -np.inf, 1.0]])
    out, l = combine_splits(o, lse)
    np.testing.assert_allclose(out[0], o[0, 0], rtol=1e-6)
    assert np.all(out[1] == 0) and l[1] == np.inf
    np.testing.assert_allclose(l[2], np.logaddexp(2.0, 1.0), rtol=1e-6)
    w = np.exp(np.array([2.0, 1.0]) - np.logaddexp(2.0, 1.0))
    np.testing.assert_allclose(out[2], w @ o[:, 2], rtol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_bf16_inputs(causal):
    rng = np.random.default_rng(11)
    bf16 = ml_dtypes.bfloat16
    q, k_dense, k_cache, bt, seqlens = make_case(rng, [0, 1, 20, 140], 2, 3, 1, 64, dtype=bf16)
    assert q.dtype == bf16 and k_cache.dtype == bf16 and np.isnan(k_cache.astype(np.float32)).any()
    got = mla_decode_reference(q, k_cache, bt, seqlens, causal=causal)
    # bf16 -> float64 is exact, so the result equals the one on the upcast values.
    assert_matches(got, dense_attention(q.astype(np.float32), k_dense.astype(np.float32), seqlens,
                                        causal))
    same = mla_decode_reference(q.astype(np.float32), k_cache.astype(np.float32), bt, seqlens,
                                causal=causal)
    np.testing.assert_array_equal(got[0], same[0])
    np.testing.assert_array_equal(got[1], same[1])
