"""A decode loop as an inference engine runs it, on a paged latent KV cache.

Requests of different lengths share one pool of pages, which a free list hands out as the requests grow. Every
step appends each request's new latent KV row (576 = 512 V dims + 64 RoPE dims) to its pages, then plans the
split-KV schedule on the GPU (`get_mla_metadata`, no host sync) and runs attention.

On a Hopper GPU with PyTorch, the step (metadata + attention) is captured once in a CUDA graph and replayed. The
query, block table and lengths are static tensors updated in place, and the metadata kernel re-plans inside the
graph. The last step is checked against the NumPy reference.

Anywhere else, the same loop runs through the NumPy reference and the scheduler's NumPy twin.

    python examples/serving_loop.py [--requests 6] [--steps 8] [--heads 16] [--page 64]
"""
from __future__ import annotations

import argparse
import time

import ml_dtypes
import numpy as np

import flashmla_rt
from flashmla_rt import reference, schedule

D_QK, D_V = 576, 512


class PagePool:
    """Free list of cache pages, and each request's row of the block table."""

    def __init__(self, num_pages: int, page: int, requests: int, max_pages_per_request: int, rng):
        self.page = page
        self.free = list(rng.permutation(num_pages))          # shuffled: pages are scattered, as in a real pool
        self.block_table = np.zeros((requests, max_pages_per_request), dtype=np.int32)

    def slot(self, req: int, position: int) -> tuple[int, int]:
        """(page id, row in the page) of token `position` of request `req`, taking a new page when needed."""
        j, row = divmod(position, self.page)
        if row == 0:
            self.block_table[req, j] = self.free.pop()
        return int(self.block_table[req, j]), row


def bf16(x: np.ndarray) -> np.ndarray:
    """Round to bfloat16 and back, so host and device hold the same values."""
    return x.astype(ml_dtypes.bfloat16).astype(np.float32)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=6)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--page", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=1500)
    args = ap.parse_args()
    b, h_q, h_kv, page = args.requests, args.heads, 1, args.page
    rng = np.random.default_rng(0)

    # Prompts of different lengths (one empty: a request whose prefill produced no cache yet).
    lengths = rng.integers(1, args.max_len, size=b).astype(np.int32)
    lengths[0] = 0
    max_pages = -(-(int(lengths.max()) + args.steps) // page)
    pool = PagePool(b * max_pages + 4, page, b, max_pages, rng)
    cache = np.full((b * max_pages + 4, page, h_kv, D_QK), np.nan, dtype=np.float32)   # NaN: unused slots
    for r in range(b):                                        # what prefill would have written
        for t in range(int(lengths[r])):
            blk, row = pool.slot(r, t)
            cache[blk, row] = bf16(rng.standard_normal((h_kv, D_QK)) / 10)

    gpu = flashmla_rt.hopper_available()
    try:
        import torch
    except ImportError:
        torch = None
    run_gpu = gpu and torch is not None
    print(f"{b} requests, lengths {lengths.tolist()}, page {page}, h_q {h_q}; "
          + ("Hopper GPU: metadata + attention captured in a CUDA graph" if run_gpu else
             "no Hopper GPU (or no PyTorch): the same loop through the NumPy reference"))

    if run_gpu:
        dev = torch.device("cuda")
        cache_t = torch.from_numpy(cache).to(dev, torch.bfloat16)
        q_t = torch.zeros((b, 1, h_q, D_QK), dtype=torch.bfloat16, device=dev)
        table_t = torch.from_numpy(pool.block_table).to(dev)
        lengths_t = torch.from_numpy(lengths).to(dev)

        def step():
            meta, splits = flashmla_rt.get_mla_metadata(lengths_t, h_q // h_kv, h_kv)
            return flashmla_rt.flash_mla_with_kvcache(q_t, cache_t, table_t, lengths_t, D_V, meta, splits,
                                                      causal=True)

        side = torch.cuda.Stream()                            # warm up on a side stream, as torch's docs ask:
        side.wait_stream(torch.cuda.current_stream())         # the first call loads the kernels, which a
        with torch.cuda.stream(side):                         # capture may not do
            step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out_t, lse_t = step()

    q = None
    for s in range(args.steps):
        # The new token of every request: its latent row goes into the cache, its query into q.
        new_rows = bf16(rng.standard_normal((b, h_kv, D_QK)) / 10)
        q = bf16(rng.standard_normal((b, 1, h_q, D_QK)) / 10)
        slots = [pool.slot(r, int(lengths[r])) for r in range(b)]
        for r, (blk, row) in enumerate(slots):
            cache[blk, row] = new_rows[r]
        lengths += 1
        if run_gpu:
            blks = torch.tensor([blk for blk, _ in slots], device=dev)
            rows = torch.tensor([row for _, row in slots], device=dev)
            cache_t[blks, rows] = torch.from_numpy(new_rows).to(dev, torch.bfloat16)
            q_t.copy_(torch.from_numpy(q))
            table_t.copy_(torch.from_numpy(pool.block_table))
            lengths_t.copy_(torch.from_numpy(lengths))
            t0 = time.perf_counter()
            graph.replay()
            torch.cuda.synchronize()
            print(f"step {s}: lengths {lengths.tolist()}, replay {1e6 * (time.perf_counter() - t0):.0f} us "
                  "(host clock, includes the sync)")
        else:
            parts = schedule.num_sm_parts(132, h_q // h_kv, h_kv)
            meta, splits = schedule.plan(lengths, parts)
            out, lse = reference.mla_decode_reference(q, cache, pool.block_table, lengths, causal=True)
            print(f"step {s}: lengths {lengths.tolist()}, {int(splits[-1])} chunks on {parts} parts, "
                  f"mean|out| {np.abs(out).mean():.4f}")

    if not run_gpu:
        print("OK (reference)")
        return 0
    # Check the last step against the reference.
    ref_out, ref_lse = reference.mla_decode_reference(q, cache, pool.block_table, lengths, causal=True)
    out = out_t.float().cpu().numpy()
    lse = lse_t.cpu().numpy()
    err = float(np.max(np.abs(out - bf16(ref_out))))
    lse_err = float(np.max(np.abs(lse - ref_lse)))
    ok = err < 2e-2 and lse_err < 1e-3 and not np.isnan(out).any()
    print(f"last step against the reference: max |out - ref| {err:.2e}, max |lse - ref| {lse_err:.2e} -> "
          f"{'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
