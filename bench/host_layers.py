"""Host cost of eager calls as a serving loop makes them: one decode step over L layers, each layer with its own
k_cache of the same shape (so every call has the same signature but another cache pointer), layers taken in turn.
Prints the median / p10 / p90 µs per call (no syncs inside the timed loop). Usage: python3 bench/host_layers.py [L]"""
import sys
import time

import torch

import flashmla_rt
from flashmla_rt import bench


def main():
    layers = int(sys.argv[1]) if len(sys.argv) > 1 else 61                # DeepSeek-V3: 61 layers
    b, s_q, h_q, s_k = 16, 1, 16, 1024
    q, kv, bt, sl = bench.make_inputs(b, s_q, h_q, s_k, False, 0)
    caches = [torch.randn_like(kv) for _ in range(layers)]
    meta, splits = flashmla_rt.get_mla_metadata(sl, s_q * h_q, 1)

    def step():
        for k in caches:
            flashmla_rt.flash_mla_with_kvcache(q, k, bt, sl, 512, meta, splits, causal=True, check_seqlens=False)
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    ts = []
    for _ in range(20):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        ts.append((time.perf_counter() - t0) / layers)
    torch.cuda.synchronize()
    ts.sort()
    n = len(ts)
    print(f"host us per call, {layers} layers in turn: median {ts[n // 2] * 1e6:.1f}, p10 {ts[n // 10] * 1e6:.1f}, "
          f"p90 {ts[9 * n // 10] * 1e6:.1f}")


if __name__ == "__main__":
    main()
