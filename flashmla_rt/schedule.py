"""Split-KV schedule: which CTA group ("part") decodes which (request, KV block) ranges.

This is the NumPy twin of the device kernel in ``kernels_cu/mla_metadata.cu``: both implement the same
greedy algorithm, and the CPU tests check the twin's invariants; the GPU tests check that the device
kernel produces the same arrays. The contents of the metadata are private to flashmla_rt (only the shapes
and dtypes match FlashMLA's, so callers that preallocate buffers keep working).

Work unit: a KV block of ``BLOCK_N`` = 64 tokens (the decode kernel's tile), whatever the page size.
A contiguous chunk of one request costs ``blocks + FIXED_OVERHEAD``; the overhead models the prologue
(Q load, pipeline fill) and epilogue (output store, split bookkeeping) of a chunk.

Metadata row of one part (int32 x 8):
  [begin_req, begin_blk, end_req, end_blk, begin_split, 0, 0, 0]
requests begin_req..end_req (inclusive); the first starts at block begin_blk, the last stops before block
end_blk (exclusive); every request in between is whole. begin_split is the split index of the first
request's chunk (0 when it starts at block 0; later requests of the part always start at split 0).
A part with no work has begin_req = b and end_req = -1.

Whole requests first: cutting a request costs more than the model's overhead says (an fp32 partial per chunk
and the combine's merge: on b=128, s_k=8192, h_q=128 the combine alone took 7 % of the call). So when every
request can stay whole with parts loaded at most NO_CUT_SLACK_PERCENT past the greedy budget, that plan is
taken instead (uniform batches whose request count does not divide the parts, e.g. 128 requests on 66 parts).

num_splits (int32 [b+1]) is the exclusive prefix sum of per-request chunk counts: request i's chunk k
writes partial results to slot num_splits[i] + k of the split workspace; a request with exactly one chunk
is written straight to the output by the decode kernel and skipped by the combine kernel.
"""
from __future__ import annotations

import numpy as np

BLOCK_M = 64            # query rows per CTA tile
BLOCK_N = 64            # KV tokens per scheduling/compute block
FIXED_OVERHEAD = 5      # cost of one chunk's prologue+epilogue, in blocks
META_COLS = 8
NO_CUT_SLACK_PERCENT = 3   # how far past the greedy budget a part may go to keep every request whole
NO_CUT_CANDIDATES = 32  # budgets tried for the whole-requests plan (one per lane of the device warp)


def num_sm_parts(sm_count: int, rows_per_head_k: int, h_kv: int) -> int:
    """CTA groups along grid.z: one CTA per SM over (m-blocks x kv heads x parts); at least 1."""
    m_blocks = -(-rows_per_head_k // BLOCK_M)
    return max(1, sm_count // h_kv // m_blocks)


def num_blocks_of(seqlen: int) -> int:
    return -(-int(seqlen) // BLOCK_N)


def whole_requests_fit(nblk, parts: int, budget: int) -> bool:
    """Whether `parts` parts of `budget` each hold every request whole (greedy, in order)."""
    used, load = 1, 0
    for n in nblk:
        cost = int(n) + FIXED_OVERHEAD
        if cost > budget:
            return False
        if load + cost > budget:
            used, load = used + 1, 0
        load += cost
    return used <= parts


def no_cut_budget(nblk, parts: int, payload: int):
    """Smallest of NO_CUT_CANDIDATES budgets in [payload, payload * (1 + slack)] (evenly stepped) at which
    every request stays whole, or None. The device tries all candidates at once (a lane each); here a bisection
    finds the same one, since a larger budget never needs more parts."""
    slack = payload * NO_CUT_SLACK_PERCENT // 100
    step = max(1, -(-slack // (NO_CUT_CANDIDATES - 1)))
    lo, hi = 0, min(NO_CUT_CANDIDATES - 1, slack // step)     # candidate indices within the slack
    if not whole_requests_fit(nblk, parts, payload + hi * step):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if whole_requests_fit(nblk, parts, payload + mid * step):
            hi = mid
        else:
            lo = mid + 1
    return payload + lo * step


def plan(cache_seqlens, parts: int):
    """Greedy split-KV plan. Returns (metadata int32 [parts, 8], num_splits int32 [b+1]).

    Every part gets a budget of ``ceil(total/parts) + FIXED_OVERHEAD``. Requests are taken in order; a
    request that does not fit whole is cut, the part takes what its budget allows and the rest goes to the
    next part. Each non-final part consumes at least ceil(total/parts) of the original cost (a cut charges
    one extra overhead, and a part that stops before cutting leaves at most one overhead unused), so
    `parts` parts always cover all requests. If a budget up to NO_CUT_SLACK_PERCENT larger lets every
    request stay whole (`no_cut_budget`), that budget is used and nothing is cut.
    """
    seqlens = np.asarray(cache_seqlens, dtype=np.int64).reshape(-1)
    b = seqlens.shape[0]
    if b == 0:
        raise ValueError("cache_seqlens: expected at least one request, got an empty array")
    if parts < 1:
        raise ValueError(f"parts: expected >= 1, got {parts}")
    nblk = -(-seqlens // BLOCK_N)
    total = int(np.sum(nblk + FIXED_OVERHEAD))
    payload = -(-total // parts) + FIXED_OVERHEAD
    whole = no_cut_budget(nblk, parts, payload)
    if whole is not None:
        payload = whole

    meta = np.zeros((parts, META_COLS), dtype=np.int32)
    num_splits = np.zeros(b + 1, dtype=np.int32)
    req, blk, split, cum = 0, 0, 0, 0
    for p in range(parts):
        begin_req, begin_blk, begin_split = req, blk, split
        budget = payload
        end_req, end_blk = -1, 0
        while req < b:
            remaining = int(nblk[req]) - blk
            if remaining + FIXED_OVERHEAD <= budget:          # the rest of this request fits
                budget -= remaining + FIXED_OVERHEAD
                end_req, end_blk = req, int(nblk[req])
                cum += split + 1
                num_splits[req + 1] = cum
                req, blk, split = req + 1, 0, 0
            else:                                            # cut: take what the budget allows
                take = budget - FIXED_OVERHEAD
                if take > 0 and whole is None:
                    end_req, end_blk = req, blk + take
                    blk += take
                    split += 1
                break
        if end_req < 0:                                      # nothing assigned to this part
            meta[p] = (b, 0, -1, 0, 0, 0, 0, 0)
        else:
            meta[p] = (begin_req, begin_blk, end_req, end_blk, begin_split, 0, 0, 0)
    if req != b:
        raise AssertionError(f"scheduler left requests unassigned (req={req}, b={b}); this is a bug")
    return meta, num_splits


def chunks(meta: np.ndarray, cache_seqlens) -> list[tuple[int, int, int, int, int]]:
    """Expand metadata into (part, request, first_block, end_block, split_index) tuples, in kernel order."""
    seqlens = np.asarray(cache_seqlens, dtype=np.int64).reshape(-1)
    out = []
    for p, row in enumerate(np.asarray(meta)):
        begin_req, begin_blk, end_req, end_blk, begin_split = (int(x) for x in row[:5])
        for req in range(begin_req, end_req + 1):
            first = begin_blk if req == begin_req else 0
            last = end_blk if req == end_req else num_blocks_of(seqlens[req])
            out.append((p, req, first, last, begin_split if req == begin_req else 0))
    return out
