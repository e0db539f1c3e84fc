"""The decode kernels' own chunk_of (kernels_cu/common/decode_tile.cuh), run on the CPU: compiled as C++ with host
stubs (tests/emulate/cuda_host_stubs.h, warp.h) and walked over split-KV plans the way the kernels' loops walk
their part's metadata row. Each chunk must be what the NumPy twin's `schedule.chunks` says, trimmed by the tile's
causal limit; and independently of the twin, every request's blocks must be covered once, each chunk in its own
split slot. The GPU tests check the same through the results; this catches a schedule mistake without a GPU."""
import subprocess
from collections import defaultdict

import numpy as np
import pytest

from emulate_build import build_host_program
from flashmla_rt import bench, schedule

BLOCK_N = schedule.BLOCK_N


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    exe = build_host_program(tmp_path_factory.mktemp("chunks_emulated"), "walk_chunks.cpp",
                             headers=("nvrtc_shim.cuh", "warp.h", "cuda_host_stubs.h"),
                             force_includes=("warp.h", "cuda_host_stubs.h"))

    def run(seqlens, parts, s_q=1, ngroups=16, causal=False):
        meta, splits = schedule.plan(seqlens, parts)
        text = (f"{len(seqlens)} {parts} {s_q} {ngroups} {int(causal)}\n"
                + " ".join(str(int(v)) for v in np.concatenate([seqlens, meta.reshape(-1), splits])) + "\n")
        done = subprocess.run([str(exe)], input=text, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        rows = [tuple(int(x) for x in line.split()) for line in done.stdout.strip().splitlines()]
        return meta, splits, rows
    return run


def causal_shift(s_q, ngroups, m_block, causal):
    """Keys the causal mask takes off the end of every sequence for m-block `m_block` (its last valid row's)."""
    if not causal:
        return 0
    last_row = min(s_q * ngroups, (m_block + 1) * 64) - 1
    return s_q - 1 - last_row // ngroups


CASES = {
    "bench-varlen-132": (bench.make_seqlens(128, 1, 4096, True, 0), 132, 1, 16, False),
    "bench-varlen-66-h128": (bench.make_seqlens(128, 1, 4096, True, 0), 66, 1, 128, False),
    "bench-varlen-33-sq2-causal": (bench.make_seqlens(128, 2, 4096, True, 0), 33, 2, 128, True),
    "fixed-4096-66": (np.full(128, 4096), 66, 1, 128, False),
    "one-long-request": (np.array([65536]), 66, 1, 128, False),
    "empty-and-tiny": (np.array([0, 1, 0, 64, 65, 0, 3000, 2]), 132, 4, 16, True),
    # m-block 0 ends in query token 1 of 4: its last 2 keys are masked, so lengths 65-66 lose a block there
    "causal-trim": (np.array([65, 66, 67, 129, 1, 2, 3, 640, 641]), 22, 4, 32, True),
    "all-empty": (np.zeros(5, dtype=np.int64), 44, 2, 64, True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_kernel_chunks_equal_the_twin(walk, name):
    seqlens, parts, s_q, ngroups, causal = CASES[name]
    seqlens = np.asarray(seqlens, dtype=np.int64)
    meta, splits, rows = walk(seqlens, parts, s_q, ngroups, causal)
    m_blocks = -(-s_q * ngroups // 64)
    expected = []
    for part, req, first, last, split in schedule.chunks(meta, seqlens):
        for m in range(m_blocks):
            keys = max(int(seqlens[req]) - causal_shift(s_q, ngroups, m, causal), 0)
            n_splits = int(splits[req + 1] - splits[req])
            expected.append((part, m, req, first, min(last, -(-keys // BLOCK_N)), int(splits[req]) + split,
                             int(n_splits > 1)))
    key = lambda r: (r[0], r[1])                                   # noqa: E731  (part, m-block); order within kept
    assert sorted(rows, key=key) == sorted(expected, key=key)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if not c[4]])
def test_kernel_chunks_cover_every_block_once(walk, name):
    """Without the twin: the blocks each m-block's chunks cover, and the split slots they write."""
    seqlens, parts, s_q, ngroups, causal = CASES[name]
    seqlens = np.asarray(seqlens, dtype=np.int64)
    _, splits, rows = walk(seqlens, parts, s_q, ngroups, causal)
    covered = defaultdict(list)
    slots = defaultdict(list)
    for part, m, req, first, last, split_idx, is_split in rows:
        assert 0 <= req < len(seqlens) and 0 <= first <= last
        covered[(m, req)].extend(range(first, last))
        slots[(m, req)].append(split_idx)
        assert is_split == int(splits[req + 1] - splits[req] > 1)
    for m in range(-(-s_q * ngroups // 64)):
        for req, n in enumerate(seqlens):
            assert sorted(covered[(m, req)]) == list(range(-(-int(n) // BLOCK_N))), (m, req)
            assert sorted(slots[(m, req)]) == list(range(int(splits[req]), int(splits[req + 1]))), (m, req)
