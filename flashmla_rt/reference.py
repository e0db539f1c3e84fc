"""NumPy reference of FlashMLA's decode semantics (the executable spec the tests compare against).

Paged gather through the block table, default scale 1/sqrt(576), bottom-right causal mask for s_q > 1,
rows with no attendable key -> out 0 and lse +inf, lse in natural log. Inputs may be any NumPy float dtype
(``ml_dtypes.bfloat16`` included); the math runs in float64 unless ``compute_dtype`` says otherwise.
Unused cache slots and block-table entries past a request's last page are never read.
"""
from __future__ import annotations

import numpy as np

HEAD_DIM_K = 576
HEAD_DIM_V = 512


def causal_key_limit(seqlen: int, s_q: int, s: int, causal: bool) -> int:
    """Number of keys query token s (0-based) may attend: bottom-right aligned, ignored when s_q == 1."""
    if not causal or s_q == 1:
        return seqlen
    return max(seqlen - (s_q - 1 - s), 0)


def gather_kv(k_cache: np.ndarray, block_table: np.ndarray, req: int, seqlen: int) -> np.ndarray:
    """Keys of one request, [seqlen, h_kv, d], in token order (only its first ceil(seqlen/page) pages)."""
    page = k_cache.shape[1]
    n_pages = -(-seqlen // page)
    ids = np.asarray(block_table[req, :n_pages], dtype=np.int64)
    return k_cache[ids].reshape(n_pages * page, *k_cache.shape[2:])[:seqlen]


def mla_decode_reference(q, k_cache, block_table, cache_seqlens, head_dim_v: int = HEAD_DIM_V,
                         softmax_scale: float | None = None, causal: bool = False,
                         compute_dtype=np.float64):
    """Returns (out [b, s_q, h_q, head_dim_v], lse [b, h_q, s_q]) as float32 NumPy arrays."""
    q = np.asarray(q)
    k_cache = np.asarray(k_cache)
    block_table = np.asarray(block_table)
    seqlens = np.asarray(cache_seqlens).reshape(-1)
    b, s_q, h_q, d = q.shape
    h_kv = k_cache.shape[2]
    ngroups = h_q // h_kv
    scale = d ** -0.5 if softmax_scale is None else float(softmax_scale)
    out = np.zeros((b, s_q, h_q, head_dim_v), dtype=np.float32)
    lse = np.full((b, h_q, s_q), np.inf, dtype=np.float32)
    for i in range(b):
        n = int(seqlens[i])
        if n == 0:
            continue
        kv = gather_kv(k_cache, block_table, i, n).astype(compute_dtype)     # [n, h_kv, d]
        qi = q[i].astype(compute_dtype)                                         # [s_q, h_q, d]
        for hk in range(h_kv):
            heads = slice(hk * ngroups, (hk + 1) * ngroups)
            k = kv[:, hk, :]                                                    # [n, d]
            v = k[:, :head_dim_v]
            scores = np.einsum("sgd,nd->sgn", qi[:, heads, :], k) * scale      # [s_q, g, n]
            for s in range(s_q):
                lim = causal_key_limit(n, s_q, s, causal)
                if lim == 0:
                    continue
                sc = scores[s, :, :lim]                                         # [g, lim]
                m = sc.max(axis=-1, keepdims=True)
                p = np.exp(sc - m)
                denom = p.sum(axis=-1, keepdims=True)
                out[i, s, heads, :] = (p / denom) @ v[:lim]
                lse[i, heads, s] = (m[:, 0] + np.log(denom[:, 0]))
    return out, lse


def combine_splits(partial_out: np.ndarray, partial_lse: np.ndarray):
    """Exact log-sum-exp merge of normalised partials: [k, ..., dv] and [k, ...] (natural log, -inf = empty).

    Returns (out, lse) with lse = +inf and out = 0 where every partial is empty (FlashMLA's convention)."""
    partial_lse = np.asarray(partial_lse, dtype=np.float64)
    m = partial_lse.max(axis=0)
    safe_m = np.where(np.isfinite(m), m, 0.0)
    w = np.exp(partial_lse - safe_m)                                            # 0 for empty partials
    total = w.sum(axis=0)
    empty = total == 0
    out = np.einsum("k...,k...d->...d", w / np.where(empty, 1.0, total), partial_out.astype(np.float64))
    lse = np.where(empty, np.inf, safe_m + np.log(np.where(empty, 1.0, total)))
    return out.astype(np.float32), lse.astype(np.float32)
