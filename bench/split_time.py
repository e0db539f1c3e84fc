"""Where a call's GPU time goes: the decode kernel alone vs decode + combine, per bench row (H200).
Builds the call's launch plan once, then times each kernel launch sequence with CUDA events (median of 50,
back-to-back launches after warm-up, so launch gaps are included as in a graph).
Usage: python3 bench/split_time.py [rows, default 0,12,16,20,22,24,25]"""
import sys

import torch

import flashmla_rt
from flashmla_rt import _fastpath, bench


def main():
    rows = [int(r) for r in (sys.argv[1] if len(sys.argv) > 1 else "0,12,16,20,22,24,25").split(",")]
    grid = bench.BASELINE
    for r in rows:
        b, s_q, h_q, s_k, varlen = grid[r][:5]
        q, kc, bt, sl = bench.make_inputs(b, s_q, h_q, s_k, varlen, seed=0)
        meta, ns = flashmla_rt.get_mla_metadata(sl, s_q * h_q, 1)
        args = (q, kc, bt, sl, 512, meta, ns)
        flashmla_rt.flash_mla_with_kvcache(*args, causal=True, check_seqlens=False)
        plan = next(iter(_fastpath._plans.values()))        # the one plan this call left
        _fastpath._plans.clear()
        stream = torch.cuda.current_stream().cuda_stream
        out, lse = plan.launch(q, kc, bt, sl, meta, ns, stream)       # allocates; below we launch by hand
        ws = torch.empty(plan.ws_elems, dtype=torch.float32, device="cuda")
        params = plan.kernel_params(q, kc, bt, sl, meta, ns, out, lse, ws)

        def decode():
            plan.launch_decode(params, stream)

        def both():
            plan.launch_decode(params, stream)
            plan.launch_combine(params, stream)
        t_dec, t_both = bench.time_back_to_back(decode, 50, 10), bench.time_back_to_back(both, 50, 10)
        splits = int(ns[-1].item())
        print(f"row {r:2d} {bench.row_label(b, s_q, h_q, s_k, varlen):<30} {plan.variant.name:<9} parts {plan.decode_grid[2]:3d} "
              f"splits {splits:4d}  decode {t_dec:7.1f} us  decode+combine {t_both:7.1f} us  "
              f"combine share {t_both - t_dec:5.1f} us", flush=True)
        del q, kc, bt, sl, args, out, lse, ws
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
