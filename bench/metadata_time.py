"""GPU time of get_mla_metadata (the split-KV scheduler kernel) on the bench grid's lengths: the kernel alone,
captured 20 times in one CUDA graph and replayed back to back (bench.capture_graph, bench.time_back_to_back);
prints the median µs per call of 15 replays for each row, and the plan's chunk count and cut requests.
Usage: python3 bench/metadata_time.py [rows as in `python -m flashmla_rt bench --rows`, default all]"""
import sys

import numpy as np
import torch

import flashmla_rt
from flashmla_rt import bench

CALLS_PER_GRAPH = 20


def time_row(b, s_q, h_q, s_k, varlen):
    seqlens = torch.tensor(bench.make_seqlens(b, s_q, s_k, varlen, 0), dtype=torch.int32, device="cuda")
    rows = s_q * h_q // bench.H_KV

    def calls():
        for _ in range(CALLS_PER_GRAPH):
            result = flashmla_rt.get_mla_metadata(seqlens, rows, bench.H_KV)
        return result

    graph, (_, splits) = bench.capture_graph(calls, warmup=3)
    us = bench.time_back_to_back(graph.replay, iters=15, warmup=1) / CALLS_PER_GRAPH
    per_req = np.diff(splits.cpu().numpy())
    return us, int(per_req.sum()), int((per_req > 1).sum())


def main():
    n = len(bench.BASELINE)
    picked = bench.parse_rows(sys.argv[1], n) if len(sys.argv) > 1 else range(n)
    for i in picked:
        b, s_q, h_q, s_k, varlen = bench.BASELINE[i][:5]
        us, chunks, cut = time_row(b, s_q, h_q, s_k, varlen)
        print(f"row {i:2d} {bench.row_label(b, s_q, h_q, s_k, varlen):32s} metadata {us:7.2f} us  "
              f"chunks {chunks:4d}  cut requests {cut:4d}", flush=True)


if __name__ == "__main__":
    main()
