"""GPU time of get_mla_metadata (the split-KV scheduler kernel) on the bench grid's lengths: the kernel alone,
captured 20 times in one CUDA graph and replayed, CUDA-event timed; prints the median µs per call of 15
replays for each row, and the plan's chunk count and cut requests.
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
    for _ in range(3):
        meta, splits = flashmla_rt.get_mla_metadata(seqlens, rows, bench.H_KV)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(CALLS_PER_GRAPH):
            meta, splits = flashmla_rt.get_mla_metadata(seqlens, rows, bench.H_KV)
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(15):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / CALLS_PER_GRAPH)
    per_req = np.diff(splits.cpu().numpy())
    return float(np.median(times)), int(per_req.sum()), int((per_req > 1).sum())


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
