"""Where a call's GPU time goes: the decode kernel alone vs decode + combine, per bench row (H200).
Builds the call's launch plan once, then times each kernel launch sequence with CUDA events (median of 50,
back-to-back launches after warm-up, so launch gaps are included as in a graph).
Usage: python3 bench/split_time.py [rows, default 0,12,16,20,22,24,25]"""
import statistics
import sys

import numpy as np
import torch

import flashmla_rt
from flashmla_rt import _fastpath, bench


def time_us(fn, iters=50, warmup=10):
    for _ in range(warmup):
        fn()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for a, b in ev:
        a.record()
        fn()
        b.record()
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) * 1e3 for a, b in ev)


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
        rec = plan.record.copy()
        ws = torch.empty(plan.ws_elems, dtype=torch.float32, device="cuda")
        rec.view(np.int64)[_fastpath._PTR_INDEX] = (q.data_ptr(), kc.data_ptr(), bt.data_ptr(), sl.data_ptr(),
                                                    meta.data_ptr(), ns.data_ptr(), out.data_ptr(), lse.data_ptr(),
                                                    ws.data_ptr(), ws.data_ptr() + 4 * plan.o_accum_elems)
        params = np.array((*plan._kv_map_addresses(kc.data_ptr()), rec.ctypes.data), dtype=np.uintp)
        pp = params.ctypes.data

        def decode():
            _fastpath._launch_kernel(plan.decode_fn.ptr, *plan.decode_grid, plan.variant.threads, 1, 1,
                                     plan.variant.smem_bytes, stream, pp, 0)

        def both():
            decode()
            _fastpath._launch_kernel(plan.combine_fn.ptr, *plan.combine_grid, 256, 1, 1, 0, stream,
                                     pp + (len(params) - 1) * params.itemsize, 0)
        t_dec, t_both = time_us(decode), time_us(both)
        splits = int(ns[-1].item())
        print(f"row {r:2d} {bench.row_label(b, s_q, h_q, s_k, varlen):<30} {plan.variant.name:<9} parts {plan.decode_grid[2]:3d} "
              f"splits {splits:4d}  decode {t_dec:7.1f} us  decode+combine {t_both:7.1f} us  "
              f"combine share {t_both - t_dec:5.1f} us", flush=True)
        del q, kc, bt, sl, out, lse, ws
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
