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


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", ".")
    b, s_q, h_q, s_k = 128, 1, 16, 4096
    blocks = b * s_k // 64
    q = torch.randn(b, s_q, h_q, 576, dtype=torch.bfloat16, device="cuda")
    kv = torch.randn(blocks, 64, 1, 576, dtype=torch.bfloat16, device="cuda")
    bt = torch.randperm(blocks, device="cuda").to(torch.int32).view(b, -1)
    sl = torch.full((b,), s_k, dtype=torch.int32, device="cuda")
    meta, ns = flashmla_rt.get_mla_metadata(sl, s_q * h_q, 1)

    def call():
        return flashmla_rt.flash_mla_with_kvcache(q, kv, bt, sl, 512, meta, ns, causal=True, check_seqlens=False)
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
