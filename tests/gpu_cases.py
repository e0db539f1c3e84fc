"""Test-case generation, reference evaluation and tolerance checks for the GPU tests.

Data follows FlashMLA's HEAD test (`tests/test_flash_mla_dense_decoding.py`, semantics doc §4.2):
q, k = randn/10 clamped to [-1, 1] (or plain N(0, 1)); the page pool is a random permutation of all
blocks; every unused cache slot (tail of a request's last page, pages past it, a few spare pages nobody
references) is NaN, and block-table entries past a request's last page are 2147480000, so a kernel that
reads anything it should not produces NaN or faults.

torch (and the other frameworks) are imported inside functions, so this module imports on a CPU-only
machine and test collection works there.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from flashmla_rt.reference import HEAD_DIM_K as D
from flashmla_rt.reference import HEAD_DIM_V as DV
from flashmla_rt.reference import mla_decode_reference

BAD_PAGE = 2147480000           # FlashMLA's value for block-table entries past a request's last page
PAGE_SIZES = (16, 32, 64, 128, 256)
DTYPES = ("bfloat16", "float16")

# FlashMLA's tolerances (kernelkit check_is_allclose): (abs_tol, rel_tol, cosine-diff tol).
OUT_TOL = (8e-4, 2.01 / 128, 5e-6)
LSE_TOL = (1e-6, 8.01 / 65536, 1e-7)

# The NumPy reference runs in float64 unless the case is big (sum(seqlens) * s_q * h_q row-key pairs
# above this); float32 is what FlashMLA's own reference uses and keeps the suite within its time budget.
F64_WORK_LIMIT = 4_000_000


# ------------------------------------------------------------------------------------------ cases
@dataclass
class Case:
    q: object                   # torch [b, s_q, h_q, 576] on the GPU
    k_cache: object             # torch [num_blocks, page, h_kv, 576]
    block_table: object         # torch int32 [b, width]
    cache_seqlens: object       # torch int32 [b]
    seqlens: np.ndarray         # host copy of cache_seqlens
    block_table_host: np.ndarray
    causal: bool = False
    softmax_scale: float | None = None

    @property
    def dtype(self) -> str:
        return str(self.q.dtype).replace("torch.", "")

    @property
    def b(self) -> int:
        return self.q.shape[0]

    @property
    def s_q(self) -> int:
        return self.q.shape[1]

    @property
    def h_q(self) -> int:
        return self.q.shape[2]

    @property
    def h_kv(self) -> int:
        return self.k_cache.shape[2]

    @property
    def page(self) -> int:
        return self.k_cache.shape[1]

    @property
    def rows(self) -> int:
        """num_heads_per_head_k for get_mla_metadata."""
        return self.s_q * self.h_q // self.h_kv


def lengths(b: int, s_k: int, s_q: int = 1, varlen: bool = False, seed: int = 0, zero_frac: float = 0.0):
    """FlashMLA's lengths: s_k, or varlen max(N(s_k, s_k/2), s_q); then a `zero_frac` share set to 0."""
    rng = np.random.default_rng(seed)
    if varlen:
        n = np.maximum(rng.normal(s_k, s_k / 2, size=b), s_q).astype(np.int32)
    else:
        n = np.full(b, s_k, dtype=np.int32)
    if zero_frac:
        n[rng.choice(b, int(round(b * zero_frac)), replace=False)] = 0
    return n


def random_tensor(shape, dtype: str, dist: str, gen, device):
    import torch
    x = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
    if dist == "randn10":
        x = (x / 10).clamp_(-1, 1)
    elif dist != "randn":
        raise ValueError(f"dist: expected 'randn10' or 'randn', got {dist!r}")
    return x.to(getattr(torch, dtype))


def make_case(b, s_q, h_q, h_kv, seqlens, *, page=64, dtype="bfloat16", causal=False, dist="randn10",
              softmax_scale=None, seed=0, extra_cols=0, spare_blocks=3, garbage="bad_page", device="cuda:0"):
    """Build one decode problem on the GPU.

    Block table: like FlashMLA, every request owns ceil(round_up(max_len, 256) / page) pages drawn from a
    random permutation of the pool (+ `extra_cols` more columns); pages past a request's last one stay NaN
    and their table entries are replaced by `garbage`: "bad_page" (2147480000) or "random" (any int32).
    """
    import torch
    seqlens = np.asarray(seqlens, dtype=np.int32).reshape(-1)
    assert seqlens.shape == (b,) and h_q % h_kv == 0
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=device).manual_seed(seed)

    padded_len = -(-max(int(seqlens.max()), 1) // 256) * 256       # FlashMLA pads max_seqlen to 256
    width = padded_len // page + extra_cols
    n_blocks = b * width + spare_blocks
    table = rng.permutation(n_blocks)[:b * width].reshape(b, width).astype(np.int32)
    pages = -(-seqlens.astype(np.int64) // page)
    unused = np.arange(width)[None, :] >= pages[:, None]
    if garbage == "bad_page":
        table[unused] = BAD_PAGE
    elif garbage == "random":
        table[unused] = rng.integers(-2**31, 2**31, size=int(unused.sum()), dtype=np.int64).astype(np.int32)
    else:
        raise ValueError(f"garbage: expected 'bad_page' or 'random', got {garbage!r}")

    q = random_tensor((b, s_q, h_q, D), dtype, dist, gen, device)
    k_cache = torch.full((n_blocks, page, h_kv, D), float("nan"), dtype=getattr(torch, dtype), device=device)
    # Scatter the valid tokens: token t of request i -> (table[i, t // page], t % page).
    total = int(seqlens.sum())
    if total:
        req = np.repeat(np.arange(b), seqlens)
        tok = np.arange(total) - np.repeat(np.cumsum(seqlens) - seqlens, seqlens)
        blk = torch.as_tensor(table[req, tok // page].astype(np.int64), device=device)
        slot = torch.as_tensor((tok % page).astype(np.int64), device=device)
        k_cache[blk, slot] = random_tensor((total, h_kv, D), dtype, dist, gen, device)

    return Case(q=q, k_cache=k_cache, block_table=torch.as_tensor(table, device=device),
                cache_seqlens=torch.as_tensor(seqlens, device=device), seqlens=seqlens, block_table_host=table,
                causal=causal, softmax_scale=softmax_scale)


def run(case: Case, out=None, lse=None, **kwargs):
    """get_mla_metadata + flash_mla_with_kvcache on the case's torch tensors."""
    import flashmla_rt
    meta, splits = flashmla_rt.get_mla_metadata(case.cache_seqlens, case.rows, case.h_kv)
    return flashmla_rt.flash_mla_with_kvcache(
        case.q, case.k_cache, case.block_table, case.cache_seqlens, DV, meta, splits,
        softmax_scale=case.softmax_scale, causal=case.causal, out=out, lse=lse, **kwargs)


def poisoned_outputs(case: Case):
    """Preallocated out/lse full of NaN: anything the kernels fail to write shows up."""
    import torch
    out = torch.full((case.b, case.s_q, case.h_q, DV), float("nan"), dtype=case.q.dtype, device=case.q.device)
    lse = torch.full((case.b, case.h_q, case.s_q), float("nan"), dtype=torch.float32, device=case.q.device)
    return out, lse


# -------------------------------------------------------------------------------------- reference
_pool = None


def _executor() -> ThreadPoolExecutor:
    # NumPy's einsum/matmul release the GIL, so threads over requests scale on a many-core host.
    global _pool
    if _pool is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        _pool = ThreadPoolExecutor(max_workers=max(1, min(workers, 32)))
    return _pool


def reference(case: Case, q=None, seqlens=None):
    """`mla_decode_reference` on host copies: (out, lse) float32 NumPy, out NOT yet rounded to q's dtype.

    Only pages that hold data are copied to the host (a compacted pool with a renumbered block table):
    copying the whole NaN-padded pool would dominate the run time, and the reference never reads the rest.
    `seqlens` may shorten requests (a prefix of each request's tokens stays valid).
    """
    import torch
    q_np = to_numpy(case.q if q is None else q)
    sl = case.seqlens if seqlens is None else np.asarray(seqlens, dtype=np.int32).reshape(-1)
    b, s_q, h_q, _ = q_np.shape
    page = case.page
    used = np.arange(case.block_table_host.shape[1])[None, :] < (-(-sl.astype(np.int64) // page))[:, None]
    ids = case.block_table_host[used].astype(np.int64)
    if ids.size:
        pool = case.k_cache[torch.as_tensor(ids, device=case.k_cache.device)].float().cpu().numpy()
    else:
        pool = np.zeros((1, page, case.h_kv, D), dtype=np.float32)
    table = np.zeros(case.block_table_host.shape, dtype=np.int64)
    table[used] = np.arange(ids.size)

    work = int(sl.astype(np.int64).sum()) * s_q * h_q
    compute_dtype = np.float64 if work <= F64_WORK_LIMIT else np.float32
    out = np.zeros((b, s_q, h_q, DV), dtype=np.float32)
    lse = np.full((b, h_q, s_q), np.inf, dtype=np.float32)

    def one(i):
        o, l = mla_decode_reference(q_np[i:i + 1], pool, table[i:i + 1], sl[i:i + 1], DV,
                                    case.softmax_scale, case.causal, compute_dtype)
        out[i], lse[i] = o[0], l[0]

    order = [int(i) for i in np.argsort(-sl, kind="stable") if sl[i] > 0]      # longest first: balance
    with _single_threaded_blas():
        list(_executor().map(one, order))
    return out, lse


def _single_threaded_blas():
    """One BLAS thread per worker while the pool runs (16 workers x 16 OpenBLAS threads ran ~7x slower on
    the H200 host); a no-op without threadpoolctl, which is not a dependency of the package."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(1)


# --------------------------------------------------------------------------------------- checking
def to_numpy(x) -> np.ndarray:
    """float32 host copy of a torch / CuPy / JAX / NumPy array (bf16 included)."""
    mod = type(x).__module__.split(".", 1)[0]
    if mod == "torch":
        return x.detach().float().cpu().numpy()
    if mod == "cupy":
        import cupy
        return cupy.asnumpy(x).astype(np.float32)
    return np.asarray(x).astype(np.float32)


def dtype_name(dtype) -> str:
    """'bfloat16' / 'float16' from a torch, NumPy, ml_dtypes or JAX dtype, or a string."""
    name = str(dtype).replace("torch.", "")
    if name not in DTYPES:
        name = np.dtype(dtype).name
    return name


def round_to(x: np.ndarray, dtype) -> np.ndarray:
    """Round float32 values to bf16/fp16 and back (FlashMLA casts out_ref to q's dtype before comparing)."""
    np_dtype = ml_dtypes.bfloat16 if dtype_name(dtype) == "bfloat16" else np.float16
    return np.asarray(x, dtype=np.float32).astype(np_dtype).astype(np.float32)


def _cos_diff(x: np.ndarray, y: np.ndarray) -> float:
    denom = float(np.sum(x * x + y * y))
    return 0.0 if denom == 0 else 1.0 - 2.0 * float(np.sum(x * y)) / denom


def _compare(name, dims, ans, ref, abs_tol, rel_tol, cos_tol) -> str | None:
    """None if `ans` matches `ref` under FlashMLA's rules, else a description of what is wrong."""
    if ans.shape != ref.shape:
        return f"{name}: shape {ans.shape}, expected {ref.shape}"
    ans, ref = ans.astype(np.float64), ref.astype(np.float64)

    def at(idx):
        return ", ".join(f"{d}={i}" for d, i in zip(dims, idx))

    # inf / -inf / NaN must sit at exactly the same positions (e.g. +inf lse of rows with no key).
    for label, test in (("+inf", np.isposinf), ("-inf", np.isneginf), ("NaN", np.isnan)):
        a, r = test(ans), test(ref)
        if not np.array_equal(a, r):
            bad = np.argwhere(a != r)
            idx = tuple(bad[0])
            return (f"{name}: {label} at {int(a.sum())} positions in the result but {int(r.sum())} in the "
                    f"reference; {len(bad)} differ, first at [{at(idx)}]: result {ans[idx]!r}, "
                    f"reference {ref[idx]!r}")
    finite = np.isfinite(ref)
    ans, ref = np.where(finite, ans, 0.0), np.where(finite, ref, 0.0)

    abs_err = np.abs(ans - ref)
    rel_err = abs_err / (np.abs(ref) + 1e-6)
    fail = (abs_err >= abs_tol) & (rel_err >= rel_tol)
    if fail.any():
        idx = np.unravel_index(np.argmax(np.where(fail, abs_err, -1.0)), ans.shape)
        return (f"{name}: {int(fail.sum())} of {ans.size} elements exceed abs {abs_tol:.3g} and rel {rel_tol:.3g}; "
                f"worst at [{at(idx)}]: result {ans[idx]:.7g}, reference {ref[idx]:.7g} "
                f"(abs {abs_err[idx]:.3g}, rel {rel_err[idx]:.3g}); max abs err {abs_err.max():.3g}")
    cos = _cos_diff(ans, ref)
    if abs(cos) > cos_tol:
        idx = np.unravel_index(np.argmax(abs_err), ans.shape)
        return (f"{name}: cosine difference {cos:.3g} > {cos_tol:.3g}; max abs err {abs_err[idx]:.3g} at "
                f"[{at(idx)}] (result {ans[idx]:.7g}, reference {ref[idx]:.7g})")
    return None


def check_close(out, lse, out_ref, lse_ref, dtype, context: str = "", out_tol=OUT_TOL) -> None:
    """Assert (out, lse) match the reference with FlashMLA's tolerances (semantics doc §4.2).

    out/lse: any framework; out_ref/lse_ref: float32 NumPy from `reference`; out_ref is rounded to `dtype`
    first. Position of inf/NaN must match exactly; elementwise abs-or-rel tolerance; global cosine diff.
    `out_tol` = (abs, rel, cos) may be loosened for data outside FlashMLA's tested range.
    """
    problems = [
        _compare("out", ("b", "s", "h", "d"), to_numpy(out), round_to(out_ref, dtype), *out_tol),
        _compare("lse", ("b", "h", "s"), to_numpy(lse), np.asarray(lse_ref, dtype=np.float32), *LSE_TOL),
    ]
    problems = [p for p in problems if p]
    if problems:
        raise AssertionError((f"[{context}] " if context else "") + "\n".join(problems))


def assert_bitwise_equal(a, b, what: str) -> None:
    """Same bits (not just close): torch tensors of equal dtype."""
    import torch
    int_dtype = {2: torch.int16, 4: torch.int32}[a.element_size()]
    assert a.shape == b.shape and a.dtype == b.dtype, f"{what}: {a.shape}/{a.dtype} vs {b.shape}/{b.dtype}"
    same = a.contiguous().view(int_dtype) == b.contiguous().view(int_dtype)
    if not bool(same.all()):
        idx = tuple(int(i) for i in torch.nonzero(~same)[0])
        raise AssertionError(f"{what}: not bitwise identical; {int((~same).sum())} elements differ, first at "
                             f"{idx}: {a[idx].item()!r} vs {b[idx].item()!r}")
