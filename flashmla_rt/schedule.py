"""Split-KV schedule: which CTA group ("part") decodes which (request, KV block) ranges.

This is the NumPy twin of the device kernel in ``kernels_cu/mla_metadata.cu``: both implement the same
greedy algorithm, and the CPU tests check the twin's invariants; the GPU tests check that the device
kernel produces the same arrays. The contents of the metadata are private to flashmla_rt (only the shapes
and dtypes match FlashMLA's, so callers that preallocate buffers keep working).

Work unit: a KV block of ``BLOCK_N`` = 64 tokens (the decode kernel's tile), whatever the page size.
A contiguous chunk of one request costs ``blocks + FIXED_OVERHEAD``; the overhead models the prologue
(Q load, pipeline fill) and epilogue (output store, split bookkeeping) of a chunk.

Metadata row of one part (int32 x 8):
  [begin_pos, begin_blk, end_pos, end_blk, begin_split, reordered, ids, ids]
positions begin_pos..end_pos (inclusive) of the request order; the first starts at block begin_blk, the last
stops before block end_blk (exclusive); every request in between is whole. begin_split is the split index of
the first request's chunk (0 when it starts at block 0; later requests of the part always start at split 0).
A part with no work has begin_pos = b and end_pos = -1. The request order is the identity (position k is
request k) unless `reordered` is 1 in every row (best fit): then columns 6-7 of all rows together hold the
request id at each position as uint16 (position k: row k // 4, bytes 24 + 2 * (k % 4) of the row), unused id
slots 0. Otherwise columns 5-7 are 0. A part reads `reordered` with the rest of its own row, so plans in request
order cost the decode kernels no extra load.

Best fit (batches that carry an order, when whole requests do not fit): each part is filled with the longest
requests that still fit whole, and only when none does is the longest one left cut to fill the part; its rest
opens the next part. In request order (the greedy) nearly every part boundary cuts a request; best fit cuts
far fewer (b=128, s_k=4096 +-50 %, 66 parts: 10 requests cut instead of 60), and its parts end up no longer.
The 32 lanes of the device kernel try 32 budgets; the plan with the least 4 * (longest part) + (requests cut)
is taken: a cut request is charged a quarter block (from the gap between the bench's varlen rows and their fixed
twins, a cut request costs 0.1-1 block of the critical path, more the more m-blocks a request has).

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
ORDER_IDS_PER_ROW = 4   # request ids in columns 6-7 of a metadata row, as uint16
REORDER_MAX_BATCH = 256  # the device records 32 lanes' orders of this many requests (uint8 ids) in shared memory
LENGTH_TABLE_SIZE = 4096  # the device's table of "how many requests have at most v blocks", v < this
BEST_FIT_CANDIDATES = 32  # budgets tried by best fit (one per lane of the device warp)
BEST_FIT_SPAN_PERCENT = 8  # ... from the lower bound ceil(total / parts) up to this much (plus one overhead) more
BEST_FIT_MAX_PARTS = 132   # the device records each lane's plan for this many parts (every Hopper GPU's SMs)


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


def can_reorder(batch: int, parts: int) -> bool:
    """Whether the metadata has room for a request order (columns 6-7) and the device for best fit's records."""
    return batch <= min(ORDER_IDS_PER_ROW * parts, REORDER_MAX_BATCH)


def best_fit_budgets(nblk, parts: int) -> list[int]:
    """The budgets best fit tries (lane i of the device warp tries the i-th): from the lower bound on any plan's
    longest part, ceil(total / parts), in even steps over BEST_FIT_SPAN_PERCENT of it plus one overhead."""
    base = -(-int(np.sum(np.asarray(nblk, dtype=np.int64) + FIXED_OVERHEAD)) // parts)
    span = base * BEST_FIT_SPAN_PERCENT // 100 + FIXED_OVERHEAD
    step = max(1, -(-span // (BEST_FIT_CANDIDATES - 1)))
    return [base + i * step for i in range(BEST_FIT_CANDIDATES)]


def best_fit_applies(nblk, parts: int) -> bool:
    """Best fit runs for batches that can carry an order, on at most BEST_FIT_MAX_PARTS parts, and whose lengths
    the device's table covers: every length a query can ask about (at most the largest budget less one overhead)
    is below LENGTH_TABLE_SIZE."""
    if not can_reorder(len(nblk), parts) or parts > BEST_FIT_MAX_PARTS:
        return False
    return min(int(np.max(nblk)), best_fit_budgets(nblk, parts)[-1] - FIXED_OVERHEAD) < LENGTH_TABLE_SIZE


def best_fit(nblk, parts: int, budget: int):
    """Best-fit plan at `budget` per part, or None when `parts` parts do not hold it.

    Part by part: the rest of the request cut by the previous part comes first (whole if it fits, else the
    part takes what fits and the rest moves on); then the longest requests not yet started that fit whole
    (ties: the higher request id); when none fits, the longest one left is cut to fill the part. Returns
    (order, rows, chunk counts per request, longest part's cost, requests cut); rows are the used parts'
    (begin_pos, begin_blk, end_pos, end_blk, begin_split)."""
    b = len(nblk)
    by_len = sorted(range(b), key=lambda i: (int(nblk[i]), i))
    lens = [int(nblk[i]) for i in by_len]
    free = [True] * b

    def largest_free_at_or_below(s):
        while s >= 0 and not free[s]:
            s -= 1
        return s

    order, rows, count = [], [], [0] * b
    carry = None                                       # (request, its next block)
    left, longest = b, 0
    for _ in range(parts):
        if left == 0 and carry is None:
            break
        room = budget
        if carry is not None:
            req, blk = carry
            begin = (len(order) - 1, blk, count[req])
            rest = int(nblk[req]) - blk
            take = min(rest, room - FIXED_OVERHEAD)        # >= 1: the cut needed budget > overhead
            count[req] += 1
            room -= take + FIXED_OVERHEAD
            end_blk = blk + take
            carry = (req, end_blk) if take < rest else None
        else:
            begin = (len(order), 0, 0)
            end_blk = None
        while carry is None and left:
            x = room - FIXED_OVERHEAD                      # the longest request that fits has x blocks or fewer
            if x < 0:
                break
            s = largest_free_at_or_below(int(np.searchsorted(lens, x, side="right")) - 1)
            cut = s < 0
            if cut:                                        # none fits whole: cut the longest one left
                if x < 1:
                    break
                s = largest_free_at_or_below(b - 1)
            req = by_len[s]
            free[s] = False
            left -= 1
            order.append(req)
            count[req] = 1
            end_blk = x if cut else lens[s]
            room -= end_blk + FIXED_OVERHEAD
            if cut:
                carry = (req, x)
        if end_blk is None:                                # nothing fits a part: nor will it fit a later one
            return None
        rows.append((begin[0], begin[1], len(order) - 1, end_blk, begin[2]))
        longest = max(longest, budget - room)
    if left or carry is not None:
        return None
    return order, rows, count, longest, sum(1 for c in count if c > 1)


def best_fit_plan(nblk, parts: int):
    """The best of the best-fit plans at best_fit_budgets (least 4 * longest part + requests cut; ties: the
    smaller budget), or None when none fits."""
    best, best_score = None, None
    for budget in best_fit_budgets(nblk, parts):
        fit = best_fit(nblk, parts, budget)
        if fit is not None and (best is None or 4 * fit[3] + fit[4] < best_score):
            best, best_score = fit, 4 * fit[3] + fit[4]
    return best


def greedy(nblk, parts: int, payload: int, whole: bool):
    """In-order plan (identity order): (rows, chunk counts per request). Parts take requests in order within
    `payload`; unless `whole`, a request that does not fit is cut, the part takes what the budget allows and
    the rest goes to the next part."""
    b = len(nblk)
    rows, count = [], [0] * b
    req, blk, split = 0, 0, 0
    for _ in range(parts):
        begin_req, begin_blk, begin_split = req, blk, split
        budget = payload
        end_req, end_blk = -1, 0
        while req < b:
            remaining = int(nblk[req]) - blk
            if remaining + FIXED_OVERHEAD <= budget:          # the rest of this request fits
                budget -= remaining + FIXED_OVERHEAD
                end_req, end_blk = req, int(nblk[req])
                count[req] = split + 1
                req, blk, split = req + 1, 0, 0
            else:                                            # cut: take what the budget allows
                take = budget - FIXED_OVERHEAD
                if take > 0 and not whole:
                    end_req, end_blk = req, blk + take
                    blk += take
                    split += 1
                break
        if end_req >= 0:
            rows.append((begin_req, begin_blk, end_req, end_blk, begin_split))
    if req != b:
        raise AssertionError(f"scheduler left requests unassigned (req={req}, b={b}); this is a bug")
    return rows, count


def plan(cache_seqlens, parts: int):
    """Split-KV plan. Returns (metadata int32 [parts, 8], num_splits int32 [b+1]).

    In order of preference:
    1. Whole requests in order, if a budget up to NO_CUT_SLACK_PERCENT past the greedy one lets every request
       stay whole (`no_cut_budget`): nothing is cut.
    2. Best fit (`best_fit_plan`), for batches that carry a request order (`best_fit_applies`).
    3. The greedy: every part gets a budget of ``ceil(total/parts) + FIXED_OVERHEAD``; requests are taken in
       order, a request that does not fit whole is cut, the part takes what its budget allows and the rest goes
       to the next part. Each non-final part consumes at least ceil(total/parts) of the original cost (a cut
       charges one extra overhead, and a part that stops before cutting leaves at most one overhead unused),
       so `parts` parts always cover all requests.
    """
    seqlens = np.asarray(cache_seqlens, dtype=np.int64).reshape(-1)
    b = seqlens.shape[0]
    if b == 0:
        raise ValueError("cache_seqlens: expected at least one request, got an empty array")
    if parts < 1:
        raise ValueError(f"parts: expected >= 1, got {parts}")
    nblk = -(-np.maximum(seqlens, 0) // BLOCK_N)
    total = int(np.sum(nblk + FIXED_OVERHEAD))
    payload = -(-total // parts) + FIXED_OVERHEAD
    whole = no_cut_budget(nblk, parts, payload)
    fit = best_fit_plan(nblk, parts) if whole is None and best_fit_applies(nblk, parts) else None
    if fit is not None:
        order, rows, count = fit[:3]
    else:
        rows, count = greedy(nblk, parts, payload if whole is None else whole, whole is not None)

    meta = np.zeros((parts, META_COLS), dtype=np.int32)
    meta[:] = (b, 0, -1, 0, 0, 0, 0, 0)
    for p, row in enumerate(rows):
        meta[p, :5] = row
    if fit is not None:
        ids = np.zeros(parts * ORDER_IDS_PER_ROW, dtype=np.uint32)
        ids[:b] = order
        pairs = ids[0::2] | (ids[1::2] << 16)
        meta[:, 5] = 1
        meta[:, 6:] = pairs.reshape(parts, 2).view(np.int32)
    num_splits = np.zeros(b + 1, dtype=np.int32)
    num_splits[1:] = np.cumsum(count)
    return meta, num_splits


def request_order(meta: np.ndarray, batch: int) -> list[int]:
    """The request id at each position (see the module docstring)."""
    meta = np.asarray(meta)
    if meta[0, 5] == 0:
        return list(range(batch))
    words = meta[:, 6:].astype(np.int64).reshape(-1) & 0xFFFFFFFF
    ids = np.stack([words & 0xFFFF, words >> 16], axis=1).reshape(-1)
    return [int(i) for i in ids[:batch]]


def chunks(meta: np.ndarray, cache_seqlens) -> list[tuple[int, int, int, int, int]]:
    """Expand metadata into (part, request, first_block, end_block, split_index) tuples, in kernel order."""
    seqlens = np.asarray(cache_seqlens, dtype=np.int64).reshape(-1)
    order = request_order(meta, seqlens.shape[0])
    out = []
    for p, row in enumerate(np.asarray(meta)):
        begin_pos, begin_blk, end_pos, end_blk, begin_split = (int(x) for x in row[:5])
        for pos in range(begin_pos, end_pos + 1):
            req = order[pos]
            first = begin_blk if pos == begin_pos else 0
            last = end_blk if pos == end_pos else num_blocks_of(seqlens[req])
            out.append((p, req, first, last, begin_split if pos == begin_pos else 0))
    return out
