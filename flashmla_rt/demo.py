"""`python -m flashmla_rt demo`: one decoding step on a small paged KV cache.

On a Hopper GPU it runs the kernels (CuPy arrays, the caller's stream) and checks them against the NumPy
reference; anywhere else it says so in one line and runs the same step through the reference.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from . import reference


def make_step(b: int, s_q: int, h_q: int, h_kv: int, page: int, mean_len: int, seed: int, dtype):
    """Random q and a paged cache: shuffled block table, NaN in unused slots, garbage ids past the end."""
    rng = np.random.default_rng(seed)
    seqlens = np.maximum(rng.normal(mean_len, mean_len / 2, b).astype(np.int64), s_q).astype(np.int32)
    seqlens[0] = 0 if b > 1 else seqlens[0]                      # one request with an empty cache
    pages_per_req = -(-seqlens.max() // page)
    n_blocks = b * pages_per_req + 2
    k_cache = np.full((n_blocks, page, h_kv, 576), np.nan, dtype=np.float32)
    block_table = np.full((b, pages_per_req), 2147480000, dtype=np.int32)
    perm = rng.permutation(n_blocks)
    for i, n in enumerate(seqlens):
        ids = perm[i * pages_per_req:i * pages_per_req + -(-int(n) // page)]
        block_table[i, :len(ids)] = ids
        for j, blk in enumerate(ids):
            valid = min(page, int(n) - j * page)
            k_cache[blk, :valid] = np.clip(rng.standard_normal((valid, h_kv, 576)) / 10, -1, 1)
    q = np.clip(rng.standard_normal((b, s_q, h_q, 576)) / 10, -1, 1)
    return q.astype(dtype), k_cache.astype(dtype), block_table, seqlens


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m flashmla_rt demo")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--s-q", type=int, default=2)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--heads-kv", type=int, default=1)
    ap.add_argument("--page", type=int, default=64)
    ap.add_argument("--seqlen", type=int, default=300)
    ap.add_argument("--dtype", choices=("bfloat16", "float16"), default="bfloat16")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import ml_dtypes
    dtype = ml_dtypes.bfloat16 if args.dtype == "bfloat16" else np.float16
    q, k_cache, block_table, seqlens = make_step(args.batch, args.s_q, args.heads, args.heads_kv, args.page,
                                                 args.seqlen, args.seed, dtype)
    print(f"decode step: b={args.batch} s_q={args.s_q} h_q={args.heads} h_kv={args.heads_kv} page={args.page} "
          f"seqlens={seqlens.tolist()} {args.dtype}, causal")
    ref_out, ref_lse = reference.mla_decode_reference(q, k_cache, block_table, seqlens, causal=True)

    from . import _device
    if not _device.hopper_available():
        print("no Hopper GPU (sm_90) here: running the same step through the NumPy reference (flashmla_rt.reference)")
        from . import get_mla_metadata                     # a NumPy cache_seqlens is planned on the host
        meta, splits = get_mla_metadata(seqlens, args.s_q * args.heads // args.heads_kv, args.heads_kv)
        print(f"schedule for 132 SMs: {meta.shape[0]} parts, {int(splits[-1])} chunks")
        print(f"out {ref_out.shape} mean|out|={np.abs(ref_out).mean():.4f}; lse[0, :, 0] (empty request) = "
              f"{ref_lse[0, :2, 0].tolist()}; lse[-1, :4, -1] = {np.round(ref_lse[-1, :4, -1], 4).tolist()}")
        return 0

    import cupy
    import flashmla_rt
    dq, dk = cupy.asarray(q), cupy.asarray(k_cache)
    dbt, dsl = cupy.asarray(block_table), cupy.asarray(seqlens)
    t0 = time.perf_counter()
    meta, splits = flashmla_rt.get_mla_metadata(dsl, args.s_q * args.heads // args.heads_kv, args.heads_kv)
    out, lse = flashmla_rt.flash_mla_with_kvcache(dq, dk, dbt, dsl, 512, meta, splits, causal=True)
    cupy.cuda.get_current_stream().synchronize()
    ms = (time.perf_counter() - t0) * 1e3
    out_h, lse_h = cupy.asnumpy(out).astype(np.float32), cupy.asnumpy(lse)
    ref_rounded = ref_out.astype(dtype).astype(np.float32)
    err = float(np.max(np.abs(out_h - ref_rounded)))
    same_inf = bool(np.array_equal(np.isinf(lse_h), np.isinf(ref_lse)))
    fin = np.isfinite(ref_lse)
    lse_err = float(np.max(np.abs(lse_h[fin] - ref_lse[fin]))) if fin.any() else 0.0
    ok = err < 2e-2 and lse_err < 1e-3 and same_inf and not np.isnan(out_h).any()
    print(f"GPU {cupy.cuda.runtime.getDeviceProperties(dq.device.id)['name'].decode()}: first call {ms:.1f} ms; "
          f"max |out - ref| = {err:.2e}, max |lse - ref| = {lse_err:.2e}, empty rows lse=+inf: {same_inf} -> "
          f"{'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1
