"""One bench case, ours then FlashMLA (if found), each called `--calls` times: a target for ncu / nsys.
Usage: python bench/ncu_case.py B S_Q H_Q S_K [--varlen] [--calls N] [--no-peer]"""
import argparse
import sys

import torch

from flashmla_rt import bench

ap = argparse.ArgumentParser()
for name in ("b", "s_q", "h_q", "s_k"):
    ap.add_argument(name, type=int)
ap.add_argument("--varlen", action="store_true")
ap.add_argument("--calls", type=int, default=2)
ap.add_argument("--no-peer", action="store_true")
a = ap.parse_args()
q, k, bt, sl = bench.make_inputs(a.b, a.s_q, a.h_q, a.s_k, a.varlen, 0)
impls = [bench.load_ours()[0]]
if not a.no_peer:
    peer = bench.load_peer()[0]
    impls += [peer] if peer else []
for mod in impls:
    call = bench.make_call(mod, q, k, bt, sl, a.s_q, a.h_q)
    for _ in range(a.calls):
        call()
    torch.cuda.synchronize()
print("done", file=sys.stderr)
