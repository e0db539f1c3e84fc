"""fp16 against bf16, interleaved (bf16, fp16, bf16, ...) so that the GPU's clock and temperature drift falls on both,
for ours and the FlashMLA peer on the same rows: whether a dtype gap is the kernel's or the chip's (a compute-bound
kernel at the power limit clocks lower on operands that toggle more bits). Usage (device): python bench/dtype_ab.py"""
import statistics

import flashmla_rt
from flashmla_rt import bench

from dtype_page import graph_us   # bench/ is the script's directory, so on sys.path

ROUNDS = 3


def main():
    peer, peer_name, _ = bench.load_peer()
    mods = [("ours", flashmla_rt)] + ([(peer_name, peer)] if peer is not None else [])
    for b, s_q, h_q, s_k in ((128, 1, 16, 8192), (128, 1, 128, 8192), (128, 2, 128, 8192)):
        for name, mod in mods:
            times = {"bfloat16": [], "float16": []}
            for _ in range(ROUNDS):
                for dtype in times:
                    times[dtype].append(graph_us(mod, b, s_q, h_q, s_k, dtype))
            bf, fp = (statistics.median(times[d]) for d in ("bfloat16", "float16"))
            print(f"b{b} s_q{s_q} h_q{h_q} s_k{s_k} {name:20s} bf16 {bf:8.1f} us  fp16 {fp:8.1f} us  "
                  f"fp16/bf16 {fp / bf:.3f}  (bf16 {[round(t, 1) for t in times['bfloat16']]}, "
                  f"fp16 {[round(t, 1) for t in times['float16']]})", flush=True)


if __name__ == "__main__":
    main()
