"""Host cost of one eager flash_mla_with_kvcache call (GPU: H200): per-call wall time without syncs, and a
cProfile of where it goes. Usage: python3 bench/profile_host.py [OUT_DIR]"""
import cProfile
import io
import os
import pstats
import sys
import time

import torch

import flashmla_rt
from flashmla_rt import bench


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", ".")
    b, s_q, h_q, s_k = 128, 1, 16, 4096                      # bench row 0
    q, kv, bt, sl = bench.make_inputs(b, s_q, h_q, s_k, False, 0)
    call = bench.make_call(flashmla_rt, q, kv, bt, sl, s_q, h_q)
    for _ in range(20):
        call()
    torch.cuda.synchronize()
    ts = []
    for _ in range(300):
        t0 = time.perf_counter()
        call()
        ts.append(time.perf_counter() - t0)
    torch.cuda.synchronize()
    ts.sort()
    lines = [f"host us per call: median {ts[150] * 1e6:.1f}, p10 {ts[30] * 1e6:.1f}, p90 {ts[270] * 1e6:.1f}"]
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(300):
        call()
    prof.disable()
    torch.cuda.synchronize()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(18)
    lines.append(s.getvalue())
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(out_dir, "host_profile.txt"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
