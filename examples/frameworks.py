"""One decode call from PyTorch, CuPy and JAX, whichever are installed.

Inputs cross into the kernels through DLPack, without copies. The results come back as the caller's own array
type on the same device. For PyTorch and CuPy the work goes on the caller's current stream; JAX arrays go
through CuPy's. Each framework's result is checked against the NumPy reference.

Without a Hopper GPU this says so, and prints the reference's result for the same inputs.

    python examples/frameworks.py
"""
from __future__ import annotations

import os

import ml_dtypes
import numpy as np

import flashmla_rt
from flashmla_rt import reference

D_V = 512


def inputs(b=3, s_q=2, h_q=16, h_kv=1, page=64, seed=0):
    """bf16 q and a paged cache (shuffled pages, NaN in unused slots) as NumPy arrays."""
    rng = np.random.default_rng(seed)
    seqlens = np.array([0, 130, 700][:b], dtype=np.int32)
    pages = -(-int(seqlens.max()) // page)
    cache = np.full((b * pages, page, h_kv, 576), np.nan, dtype=np.float32)
    table = rng.permutation(b * pages).astype(np.int32).reshape(b, pages)
    for r, n in enumerate(seqlens):
        for t in range(int(n)):
            cache[table[r, t // page], t % page] = rng.standard_normal((h_kv, 576)) / 10
    q = rng.standard_normal((b, s_q, h_q, 576)) / 10
    return q.astype(ml_dtypes.bfloat16), cache.astype(ml_dtypes.bfloat16), table, seqlens


def check(name, out, lse, ref_out, ref_lse) -> bool:
    out = np.asarray(out, dtype=np.float32)
    lse = np.asarray(lse)
    err = float(np.max(np.abs(out - ref_out.astype(ml_dtypes.bfloat16).astype(np.float32))))
    same_inf = bool(np.array_equal(np.isinf(lse), np.isinf(ref_lse)))
    fin = np.isfinite(ref_lse)
    lse_err = float(np.max(np.abs(lse[fin] - ref_lse[fin])))
    ok = err < 2e-2 and lse_err < 1e-3 and same_inf
    print(f"{name:7s}: max |out - ref| {err:.2e}, max |lse - ref| {lse_err:.2e}, empty rows +inf: {same_inf} -> "
          f"{'OK' if ok else 'MISMATCH'}")
    return ok


def run_torch(q, cache, table, seqlens, rows, h_kv):
    import torch
    dev = torch.device("cuda")
    to = {np.dtype(ml_dtypes.bfloat16): torch.bfloat16}
    tq, tk = (torch.from_numpy(x.astype(np.float32)).to(dev, to[x.dtype]) for x in (q, cache))
    tt, ts = torch.from_numpy(table).to(dev), torch.from_numpy(seqlens).to(dev)
    meta, splits = flashmla_rt.get_mla_metadata(ts, rows, h_kv)
    out, lse = flashmla_rt.flash_mla_with_kvcache(tq, tk, tt, ts, D_V, meta, splits, causal=True)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16 and out.device == tq.device
    return out.float().cpu().numpy(), lse.cpu().numpy()


def run_cupy(q, cache, table, seqlens, rows, h_kv):
    import cupy
    cq, ck, ct, cs = (cupy.asarray(x) for x in (q, cache, table, seqlens))
    meta, splits = flashmla_rt.get_mla_metadata(cs, rows, h_kv)
    out, lse = flashmla_rt.flash_mla_with_kvcache(cq, ck, ct, cs, D_V, meta, splits, causal=True)
    assert isinstance(out, cupy.ndarray)
    return cupy.asnumpy(out).astype(np.float32), cupy.asnumpy(lse)


def run_jax(q, cache, table, seqlens, rows, h_kv):
    # JAX reserves 75 % of the GPU's memory at import unless told otherwise; torch and CuPy share this GPU here.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax
    try:
        dev = jax.devices("gpu")[0]
    except RuntimeError:                                      # a CPU-only JAX
        raise ImportError("jax has no GPU backend") from None
    jq, jk, jt, js = (jax.device_put(x, dev) for x in (q, cache, table, seqlens))
    meta, splits = flashmla_rt.get_mla_metadata(js, rows, h_kv)
    out, lse = flashmla_rt.flash_mla_with_kvcache(jq, jk, jt, js, D_V, meta, splits, causal=True)
    assert isinstance(out, jax.Array) and out.devices() == {dev}
    return np.asarray(out).astype(np.float32), np.asarray(lse)


def main() -> int:
    q, cache, table, seqlens = inputs()
    b, s_q, h_q, _ = q.shape
    h_kv = cache.shape[2]
    rows = s_q * h_q // h_kv
    ref_out, ref_lse = reference.mla_decode_reference(q, cache, table, seqlens, causal=True)
    print(f"b={b} s_q={s_q} h_q={h_q} seqlens={seqlens.tolist()} bf16, causal")
    if not flashmla_rt.hopper_available():
        print("no Hopper GPU (sm_90) here: the NumPy reference's result for these inputs:")
        print(f"  out {ref_out.shape}, lse[0] (empty request) {ref_lse[0, :2, 0].tolist()}, "
              f"lse[-1, :3, -1] {np.round(ref_lse[-1, :3, -1], 4).tolist()}")
        print("OK (reference)")
        return 0
    ok, ran = True, 0
    for name, run in (("torch", run_torch), ("cupy", run_cupy), ("jax", run_jax)):
        try:
            result = run(q, cache, table, seqlens, rows, h_kv)
        except ImportError:
            print(f"{name:7s}: not installed (or no GPU backend), skipped")
            continue
        ok = check(name, *result, ref_out, ref_lse) and ok
        ran += 1
    print("OK" if ok and ran else "MISMATCH" if not ok else "no framework installed")
    return 0 if ok and ran else 1


if __name__ == "__main__":
    raise SystemExit(main())
