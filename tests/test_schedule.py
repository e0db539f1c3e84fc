"""CPU tests of flashmla_rt.schedule, the NumPy twin of the device split-KV scheduler.

The GPU tests compare the device kernel against this twin, so here we check the twin's invariants
directly: exact coverage of every request's 64-token blocks, consistent num_splits, metadata layout,
per-part cost budget and load balance, plus FlashMLA's worked examples (semantics doc §2).
"""
import numpy as np
import pytest

from flashmla_rt import bench, schedule
from flashmla_rt.schedule import BLOCK_N, FIXED_OVERHEAD, NO_CUT_SLACK_PERCENT, chunks, num_sm_parts, plan

PARTS = [1, 2, 3, 7, 33, 66, 132, 264]
SPECIAL = [0, 1, 63, 64, 65, 131072]


def nblocks(seqlens):
    return [-(-int(s) // BLOCK_N) for s in seqlens]


def check_plan(seqlens, parts):
    """Assert every documented invariant of plan()/chunks() for one input."""
    seqlens = np.asarray(seqlens, dtype=np.int32)
    b = len(seqlens)
    nblk = nblocks(seqlens)
    meta, num_splits = plan(seqlens, parts)

    # Shapes/dtypes are what FlashMLA callers preallocate: [parts, 8] and [b+1], int32.
    assert meta.dtype == np.int32 and meta.shape == (parts, 8)
    assert num_splits.dtype == np.int32 and num_splits.shape == (b + 1,)
    order = schedule.request_order(meta, b)
    if meta[0, 5] == 1:
        # Reordered (best fit, only where the order fits): every row says so, columns 6-7 carry a permutation of
        # the requests, unused id slots 0.
        assert schedule.can_reorder(b, parts) and np.all(meta[:, 5] == 1)
        assert sorted(order) == list(range(b))
        words = meta[:, 6:].astype(np.int64).reshape(-1) & 0xFFFFFFFF
        ids = np.stack([words & 0xFFFF, words >> 16], axis=1).reshape(-1)
        assert np.all(ids[b:] == 0)
    else:
        assert np.all(meta[:, 5:] == 0) and order == list(range(b))
    assert num_splits[0] == 0
    per_req = np.diff(num_splits.astype(np.int64))
    assert np.all(per_req >= 1), "every request (even length 0) owns at least one split slot"
    assert num_splits[-1] <= b + parts

    # Empty parts are exactly (b, 0, -1, 0, ...) and only trail the used ones (greedy fills in order).
    empty = meta[:, 2] < 0
    for p in np.flatnonzero(empty):
        assert meta[p, :5].tolist() == [b, 0, -1, 0, 0] and meta[p, 5] == meta[0, 5]
    if empty.any():
        assert np.all(empty[np.argmax(empty):]), "a used part follows an empty one"

    ch = chunks(meta, seqlens)
    assert len(ch) == num_splits[-1]
    # Kernel order: parts ascending, and the requests in the metadata's order across the whole list (a request's
    # chunks are consecutive).
    assert [c[0] for c in ch] == sorted(c[0] for c in ch)
    walked = [c[1] for i, c in enumerate(ch) if i == 0 or ch[i - 1][1] != c[1]]
    assert walked == order
    assert not any(empty[c[0]] for c in ch)

    # Per request: chunks tile [0, nblk) exactly once, in order, split indices 0..k-1.
    by_req = {i: [] for i in range(b)}
    for p, req, first, last, split in ch:
        by_req[req].append((first, last, split))
    for i in range(b):
        cs = by_req[i]
        assert len(cs) == per_req[i], f"request {i}: chunk count vs num_splits"
        assert [c[2] for c in cs] == list(range(len(cs)))
        assert len(cs) <= parts
        pos = 0
        for first, last, _ in cs:
            assert first == pos
            # Only an empty request may own an empty chunk (cuts always take >= 1 block).
            assert last > first or (nblk[i] == 0 and last == first == 0)
            pos = last
        assert pos == nblk[i], f"request {i} (len {seqlens[i]}): covered {pos} of {nblk[i]} blocks"

    total = sum(n + FIXED_OVERHEAD for n in nblk)
    even = -(-total // parts)
    cost = np.zeros(parts, dtype=np.int64)
    for p, _, first, last, _ in ch:
        cost[p] += last - first + FIXED_OVERHEAD
    used = np.flatnonzero(~empty)
    assert len(used) >= 1
    whole = schedule.no_cut_budget(nblk, parts, even + FIXED_OVERHEAD)
    if whole is not None:
        # Whole-requests plan: nothing cut, parts at most NO_CUT_SLACK_PERCENT past the greedy budget, and
        # each used part but the last stopped because its next request would not fit.
        assert np.all(per_req == 1)
        assert whole <= (even + FIXED_OVERHEAD) * (100 + NO_CUT_SLACK_PERCENT) // 100
        assert np.all(cost <= whole)
        for p in used[:-1]:
            assert cost[p] + nblk[meta[p, 2] + 1] + FIXED_OVERHEAD > whole
        return meta, num_splits
    fit = schedule.best_fit_plan(nblk, parts) if schedule.best_fit_applies(nblk, parts) else None
    if fit is not None:
        # Best fit: the chosen plan itself, its longest part one of the budgets tried, and the part boundaries
        # the only places a request is cut (each part cuts at most the one it ends with).
        assert walked == fit[0] and cost.max() == fit[3] and int(np.sum(per_req > 1)) == fit[4]
        assert fit[3] <= schedule.best_fit_budgets(nblk, parts)[-1]
        assert np.sum(per_req - 1) <= len(used) - 1
        return meta, num_splits
    # Cost per part never exceeds the budget ceil(total/parts) + overhead.
    assert np.all(cost <= even + FIXED_OVERHEAD)
    # Load balance: every used part but the last one stops with < one overhead of budget left, so
    # their costs lie within [even, even + FIXED_OVERHEAD]; the last one just takes the remainder.
    if len(used) > 1:
        body = cost[used[:-1]]
        assert body.min() >= even
        assert body.max() - body.min() <= FIXED_OVERHEAD
    assert cost[used[-1]] >= FIXED_OVERHEAD
    return meta, num_splits


def random_seqlens(rng):
    b = int(rng.integers(1, 301))
    kind = rng.integers(0, 5)
    if kind == 0:                                   # all empty
        return np.zeros(b, dtype=np.int64)
    if kind == 1:                                   # block-boundary values and the huge one
        return rng.choice(SPECIAL, size=b)
    if kind == 2:                                   # short
        return rng.integers(0, 200, size=b)
    if kind == 3:                                   # log-uniform up to 128K
        return np.floor(np.exp(rng.uniform(0, np.log(131073), size=b))).astype(np.int64) - 1
    mix = rng.integers(0, 5000, size=b)             # mixture: ~half empty, some huge
    mix[rng.random(b) < 0.5] = 0
    mix[rng.random(b) < 0.05] = 131072
    return mix


@pytest.mark.parametrize("parts", PARTS)
@pytest.mark.parametrize("seed", range(25))
def test_random_plans(seed, parts):
    rng = np.random.default_rng(1000 * seed + parts)
    check_plan(random_seqlens(rng), parts)


@pytest.mark.parametrize("parts", PARTS)
@pytest.mark.parametrize("seqlens", [
    [0], [1], [63], [64], [65], [131072], [0] * 300, [131072] * 300, SPECIAL, SPECIAL[::-1],
    [0, 131072, 0], [1] * 300, [64] * 132 + [65] * 132,
])
def test_edge_plans(seqlens, parts):
    check_plan(seqlens, parts)


@pytest.mark.parametrize("rows, h_kv, expected", [
    (16, 1, 132), (64, 1, 132), (65, 1, 66), (128, 1, 66), (256, 1, 33),
    (16, 2, 66), (128, 2, 33), (256, 2, 16), (10**6, 1, 1), (10**6, 2, 1),
])
def test_num_sm_parts(rows, h_kv, expected):
    assert num_sm_parts(132, rows, h_kv) == expected


def test_worked_example_long_single_request():
    # 1024 blocks, 66 parts: payload 21 -> 64 parts x 16 blocks, 2 idle parts, 64 splits.
    meta, num_splits = check_plan([65536], 66)
    assert num_splits.tolist() == [0, 64]
    assert all(last - first == 16 for _, _, first, last, _ in chunks(meta, [65536]))
    assert np.sum(meta[:, 2] < 0) == 2


def test_worked_example_mixed():
    # payload 9 -> 4 blocks per chunk; 101 split slots in total.
    meta, num_splits = check_plan([100, 5000, 20000, 64], 132)
    assert num_splits[-1] == 101


def test_worked_example_no_splits():
    # 128 x 64 blocks on 66 parts: two whole requests per part, nothing split, combine is a no-op.
    meta, num_splits = check_plan([4096] * 128, 66)
    assert np.array_equal(num_splits, np.arange(129))
    assert np.all(meta[:64, 2] - meta[:64, 0] == 1) and np.all(meta[64:, 2] == -1)


@pytest.mark.parametrize("parts, per_part", [(66, 2), (33, 4)])
def test_uniform_batch_stays_whole(parts, per_part):
    # 128 x 128 blocks: the greedy budget (263 on 66 parts) would cut nearly every request; two whole
    # requests per part cost 266, 1.1 % more, so nothing is cut (and likewise four per part on 33 parts).
    meta, num_splits = check_plan([8192] * 128, parts)
    assert np.array_equal(num_splits, np.arange(129))
    used = 128 // per_part
    assert np.all(meta[:used, 2] - meta[:used, 0] == per_part - 1) and np.all(meta[used:, 2] == -1)


def test_whole_requests_need_more_than_the_slack():
    # 128 x 128 blocks on 100 parts: whole requests need 133 per part, 24 % past the greedy budget 176.
    meta, num_splits = check_plan([8192] * 128, 100)
    assert schedule.no_cut_budget(nblocks([8192] * 128), 100, 176) is None
    assert num_splits[-1] > 128


@pytest.mark.parametrize("seed", range(20))
def test_no_cut_budget_is_the_first_fitting_candidate(seed):
    # Against a brute-force count of parts (whole requests packed in order, a new part when one is full).
    rng = np.random.default_rng(seed)
    nblk = rng.integers(0, 300, int(rng.integers(1, 200)))
    parts = int(rng.integers(1, 140))
    payload = -(-int(np.sum(nblk + FIXED_OVERHEAD)) // parts) + FIXED_OVERHEAD

    def parts_needed(budget):
        bins = [0]
        for n in nblk:
            if bins[-1] + n + FIXED_OVERHEAD > budget:
                bins.append(0)
            bins[-1] += n + FIXED_OVERHEAD
        return len(bins) if max(nblk) + FIXED_OVERHEAD <= budget else None

    got = schedule.no_cut_budget(nblk, parts, payload)
    slack = payload * NO_CUT_SLACK_PERCENT // 100
    step = max(1, -(-slack // 31))
    fits = [payload + i * step for i in range(32)
            if i * step <= slack and (parts_needed(payload + i * step) or parts + 1) <= parts]
    assert got == (fits[0] if fits else None)


def test_empty_seqlens_rejected():
    with pytest.raises(ValueError, match="cache_seqlens"):
        plan([], 4)
    with pytest.raises(ValueError, match="cache_seqlens"):
        plan(np.zeros((0,), dtype=np.int32), 4)


def test_num_blocks_of():
    assert [schedule.num_blocks_of(n) for n in SPECIAL] == [0, 1, 1, 1, 2, 2048]


def best_fit_by_lists(nblk, parts, budget):
    """best_fit written the plain way (lists of requests left, max() for each pick), as an independent check."""
    left = list(range(len(nblk)))
    order, parts_used, count, carry, longest = [], 0, [0] * len(nblk), None, 0
    while left or carry:
        if parts_used == parts:
            return None
        parts_used += 1
        room, took = budget, False
        if carry:
            req, blk = carry
            take = min(nblk[req] - blk, room - FIXED_OVERHEAD)
            count[req] += 1
            room -= take + FIXED_OVERHEAD
            carry, took = ((req, blk + take) if blk + take < nblk[req] else None), True
        while not carry and left and room >= FIXED_OVERHEAD:
            fitting = [r for r in left if nblk[r] + FIXED_OVERHEAD <= room]
            if fitting:
                req = max(fitting, key=lambda r: (nblk[r], r))
                room -= nblk[req] + FIXED_OVERHEAD
            elif room - FIXED_OVERHEAD >= 1:
                req = max(left, key=lambda r: (nblk[r], r))
                carry = (req, room - FIXED_OVERHEAD)
                room = 0
            else:
                break
            left.remove(req)
            order.append(req)
            count[req], took = 1, True
        if not took:
            return None
        longest = max(longest, budget - room)
    return order, count, longest, sum(c > 1 for c in count)


@pytest.mark.parametrize("seed", range(40))
def test_best_fit_matches_a_plain_implementation(seed):
    rng = np.random.default_rng(seed)
    nblk = [int(n) for n in nblocks(random_seqlens(rng))][: schedule.REORDER_MAX_BATCH]
    parts = int(rng.choice(PARTS))
    for budget in schedule.best_fit_budgets(nblk, parts)[::7]:
        got, want = schedule.best_fit(nblk, parts, budget), best_fit_by_lists(nblk, parts, budget)
        assert (got is None) == (want is None), budget
        if got is not None:
            assert (got[0], got[2], got[3], got[4]) == want, budget


def bench_varlen_seqlens(b, s_k, seed=0):
    """The bench's varlen lengths for s_q = 1."""
    return bench.make_seqlens(b, 1, s_k, True, seed)


def row_costs(rows, nblk):
    """Cost of each part from (begin, begin_blk, end, end_blk, begin_split) rows over the identity order."""
    return [sum((end_blk if r == end else nblk[r]) - (begin_blk if r == begin else 0) + FIXED_OVERHEAD
                for r in range(begin, end + 1)) for begin, begin_blk, end, end_blk, _ in rows]


@pytest.mark.parametrize("s_k, parts", [(4096, 132), (4096, 66), (4096, 33), (8192, 132), (8192, 66), (8192, 33)])
@pytest.mark.parametrize("seed", range(3))
def test_best_fit_cuts_fewer_requests_on_varlen_batches(s_k, parts, seed):
    # The bench's varlen rows (b=128): best fit is taken, cuts at most three quarters of the requests the
    # in-order greedy cuts (about half on 66 parts and below), and its longest part is no longer than the greedy's.
    seqlens = bench_varlen_seqlens(128, s_k, seed)
    nblk = nblocks(seqlens)
    payload = -(-sum(n + FIXED_OVERHEAD for n in nblk) // parts) + FIXED_OVERHEAD
    assert schedule.no_cut_budget(nblk, parts, payload) is None and schedule.best_fit_applies(nblk, parts)
    rows, count = schedule.greedy(nblk, parts, payload, False)
    greedy_cut = sum(c > 1 for c in count)
    meta, num_splits = check_plan(seqlens, parts)
    cut = int(np.sum(np.diff(num_splits) > 1))
    cost = np.zeros(parts, dtype=np.int64)
    for p, _, first, last, _ in chunks(meta, seqlens):
        cost[p] += last - first + FIXED_OVERHEAD
    assert 4 * cut <= 3 * greedy_cut, (cut, greedy_cut)
    if parts <= 66:
        assert 2 * cut <= greedy_cut, (cut, greedy_cut)
    assert cost.max() <= max(row_costs(rows, nblk))


@pytest.mark.parametrize("batch, parts, room", [(528, 132, False), (256, 132, True), (257, 132, False),
                                                (132, 33, True), (133, 33, False), (1, 1, True), (5, 1, False)])
def test_which_batches_can_be_reordered(batch, parts, room):
    # Lengths that whole requests in order cannot hold: best fit plans them exactly where the order fits.
    seqlens = bench_varlen_seqlens(batch, 5000, seed=batch)
    nblk = nblocks(seqlens)
    assert schedule.can_reorder(batch, parts) == room
    meta, _ = plan(seqlens, parts)
    payload = -(-sum(n + FIXED_OVERHEAD for n in nblk) // parts) + FIXED_OVERHEAD
    in_order = schedule.no_cut_budget(nblk, parts, payload) is not None
    assert bool(meta[0, 5]) == (not in_order and schedule.best_fit_applies(nblk, parts)
                                and schedule.best_fit_plan(nblk, parts) is not None)
    if room and not in_order:
        assert meta[0, 5] == 1
    if not meta[0, 5]:
        assert np.all(meta[:, 5:] == 0)


def test_plans_in_request_order_say_so():
    # Whole requests in order (the fixed bench rows): no order carried, columns 5-7 all 0.
    meta, num_splits = check_plan([4096] * 128, 66)
    assert np.all(meta[:, 5:] == 0) and np.array_equal(num_splits, np.arange(129))


def test_order_ids_pack_two_per_word():
    # 10 varlen requests on 3 parts, reordered: position k's id is the uint16 at bytes 24 + 2 (k % 4) of row k // 4.
    seqlens = bench_varlen_seqlens(10, 5000, seed=3)
    meta, _ = plan(seqlens, 3)
    assert np.all(meta[:, 5] == 1)
    order = schedule.request_order(meta, 10)
    assert order != list(range(10))
    raw = meta.tobytes()
    for k, req in enumerate(order):
        off = 32 * (k // 4) + 24 + 2 * (k % 4)
        assert int.from_bytes(raw[off:off + 2], "little") == req
    assert sorted(order) == list(range(10))
