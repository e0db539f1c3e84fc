"""Timeline of the decode kernel's pairs in CTA (0, 0, 0), from its FMLA_TRACE probe (clock64 per event), the SM
clock over the traced pairs, and every CTA's duration (%globaltimer) against the kernel's span.
Usage (device): python bench/trace_decode.py B S_Q H_Q S_K [var] [fp16]   -> median cycles of each event after pair
start (`var`: the bench's variable-length seqlens of that row instead of fixed ones; `fp16`: fp16 q and cache; env
TRACE_WARMUP: back-to-back calls before the traced one, default 2)."""
import os
import sys

os.environ["FLASHMLA_RT_NVRTC_OPTIONS"] = "-DFMLA_TRACE=1 " + os.environ.get("FLASHMLA_RT_NVRTC_OPTIONS", "")
os.environ["FLASHMLA_RT_DECODE_KERNEL"] = "seesaw"    # the probe is in the seesaw kernel; few-row cases run another
import numpy as np  # noqa: E402
import torch  # noqa: E402

from flashmla_rt import bench, kernels  # noqa: E402
from trace_arrays import CTA_MARKS_SHAPE, trace_array  # noqa: E402

EVENTS = {0: ["start", "S0 done", "softmax0 done", "got scale1", "P0' published", "got P1", "PV1_L done",
              "K0 last tile in"],
          1: ["start", "S1 done", "got scale0", "softmax1 done", "PV1_R done", "got P0'", "PV0_R done",
              "K1 last tile in"],
          2: ["st0 V_L issued", "st0 V_R issued", "st0 RoPE issued", "st1 V_L issued", "st1 V_R issued",
              "st1 RoPE issued"]}   # producer: region issues of the block the stage holds in that pair

b, s_q, h_q, s_k = map(int, sys.argv[1:5])
flags = sys.argv[5:]                              # "var": varlen seqlens; "fp16": fp16 instead of bf16
varlen = "var" in flags
q, k, bt, sl = bench.make_inputs(b, s_q, h_q, s_k, varlen, 0, dtype="float16" if "fp16" in flags else "bfloat16")
call = bench.make_call(bench.load_ours()[0], q, k, bt, sl, s_q, h_q)
# TRACE_WARMUP back-to-back calls first: a sustained run's clock (power limit), not a cold one's
for _ in range(int(os.environ.get("TRACE_WARMUP", "2"))):
    call()
torch.cuda.synchronize()
arrays = {"fmla_trace": (3, 8, 64), "fmla_trace_ns": (64,), "fmla_trace_cta": CTA_MARKS_SHAPE,
          "fmla_trace_chunk": (16, 8)}
for name, shape in arrays.items():
    trace_array(kernels.DECODE_SOURCE, name, shape).fill(0)                 # only the next launch's events remain
torch.cuda.synchronize()
call()
torch.cuda.synchronize()
t, ns, cta, chunk = (trace_array(kernels.DECODE_SOURCE, name, shape).get().astype(np.int64) for name, shape in arrays.items())

n = int((t[0, 0] > 0).sum())
base = t[0, 0, :n]
print(f"pairs traced: {n}; cycles per pair (median of start-to-start): {np.median(np.diff(base)):.0f}")
if n > 2:
    ghz = (base[n - 1] - base[0]) / (ns[n - 1] - ns[0])
    print(f"SM clock over the traced pairs: {ghz:.3f} GHz; ns per pair {np.median(np.diff(ns[:n])):.0f}")
for wg in (0, 1, 2):
    for ev, name in enumerate(EVENTS[wg]):
        rel = t[wg, ev, 1:n - 1] - base[1:n - 1]
        print(f"WG{wg} {name:14s} median {np.median(rel):7.0f}  p10 {np.percentile(rel, 10):7.0f}  "
              f"p90 {np.percentile(rel, 90):7.0f}")
print("pair-by-pair WG0 start deltas:", np.diff(base)[:16].tolist())
slow = [(i, int(d)) for i, d in enumerate(np.diff(base)) if d > 1.3 * np.median(np.diff(base))]
print("pairs taking > 1.3x the median (index, cycles; chunk boundaries show here):", slow[:16])
done = (cta[:, 0] > 0) & (cta[:, 1] > 0)
if done.any():
    start, end = cta[done, 0], cta[done, 1]
    dur = (end - start) / 1e3
    print(f"CTAs: {int(done.sum())}; duration us min {dur.min():.1f} median {np.median(dur):.1f} max {dur.max():.1f}; "
          f"kernel span (first start to last end) {(end.max() - start.min()) / 1e3:.1f} us; "
          f"starts spread {(start.max() - start.min()) / 1e3:.1f} us; CTA 0 {dur[0]:.1f} us")
    print(f"CTA durations p10 {np.percentile(dur, 10):.1f} p50 {np.median(dur):.1f} p90 {np.percentile(dur, 90):.1f} us")
    worked = done & (cta[:, 2] > 0)                   # CTAs that had a chunk
    epi, pairs_done = (cta[worked, 1] - cta[worked, 2]) / 1e3, cta[worked, 2]
    print(f"CTA epilogues (last chunk's pairs done to end) us p10 {np.percentile(epi, 10):.2f} "
          f"p50 {np.median(epi):.2f} p90 {np.percentile(epi, 90):.2f}; pairs done, spread over CTAs p10-p90 "
          f"{(np.percentile(pairs_done, 90) - np.percentile(pairs_done, 10)) / 1e3:.1f} us")
    if cta[0, 0] > 0 and n > 0:
        print(f"CTA 0: start to first pair {(ns[0] - cta[0, 0]) / 1e3:.2f} us; last traced pair start to its "
              f"pairs done {(cta[0, 2] - ns[n - 1]) / 1e3:.2f} us, then to its end {(cta[0, 1] - cta[0, 2]) / 1e3:.2f}"
              f" us ({n} pairs traced)")
for k in range(16):                                   # CTA 0's chunks: what each boundary costs, part by part
    q_issued, q_landed, pairs_done, epi_done, sums_done, stores_issued = chunk[k, :6]
    if not chunk[k].any():
        break
    if q_issued == 0:
        print(f"CTA 0 chunk {k}: empty (no Q load); epilogue {(epi_done - pairs_done) / 1e3:.2f} us")
        continue
    nxt = f"; then {(chunk[k + 1, 0] - epi_done) / 1e3:.2f} us to the next Q issue" if k + 1 < 16 and chunk[k + 1, 0] else ""
    print(f"CTA 0 chunk {k}: Q wait {(q_landed - q_issued) / 1e3:.2f} us, pairs {(pairs_done - q_landed) / 1e3:.2f} us, "
          f"epilogue {(epi_done - pairs_done) / 1e3:.2f} us (to the row-sum exchange {(sums_done - pairs_done) / 1e3:.2f}, "
          f"stores issued {(stores_issued - sums_done) / 1e3:.2f}, the other warps {(epi_done - stores_issued) / 1e3:.2f}){nxt}")
