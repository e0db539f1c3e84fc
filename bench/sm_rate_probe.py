"""Device probe: is the uneven DRAM service of the memory-bound rows' CTAs a property of the SMs?

call 65's trace (`trace_ctas_call65_H200.txt`) found equal-work CTAs of row 12 finishing up to 13 us apart (rates
0.477-0.514 blocks/us, p10-p90). If the slow ones are the same SMs every time (their place on the chip), a plan
could give those SMs less work; if it changes from call to call, only dynamic assignment helps.
Here every CTA (one per SM, `ctas` of them) streams an equal contiguous share of a 1.2 GB buffer (16-B loads, 8
in flight per thread), and records its SM id and its start and end (%globaltimer). Repeated `runs` times:
the per-SM durations of each run, their spread, and the rank correlation of the durations between runs.
Usage (device): python3 bench/sm_rate_probe.py > $OUT/sm_rate_probe.txt
"""
import json
import sys

import cupy as cp
import numpy as np

SRC = r"""
extern "C" __global__ void __launch_bounds__(512, 1)
stream(const uint4* __restrict__ buf, long long per_cta, unsigned long long* rec, unsigned* sink) {
  unsigned long long t0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  const uint4* p = buf + (long long)blockIdx.x * per_cta;
  unsigned acc = 0;
  for (long long i = threadIdx.x; i + 7 * 512 < per_cta; i += 8 * 512) {
    uint4 v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = __ldcs(p + i + j * 512);
#pragma unroll
    for (int j = 0; j < 8; ++j) acc ^= v[j].x ^ v[j].w;
  }
  if (acc == 0x9e3779b9u) sink[0] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned long long t1;
    unsigned smid;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t1));
    asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
    rec[3 * blockIdx.x] = smid;
    rec[3 * blockIdx.x + 1] = t0;
    rec[3 * blockIdx.x + 2] = t1;
  }
}
"""


def ranks(x):
    r = np.empty(len(x))
    r[np.argsort(x)] = np.arange(len(x))
    return r


def main():
    k = cp.RawModule(code=SRC, options=("-arch=sm_90a", "-std=c++17"), backend="nvrtc").get_function("stream")
    sms = cp.cuda.Device().attributes["MultiProcessorCount"]
    total = 1208 << 20                                        # row 12's KV bytes
    buf = cp.random.randint(0, 2**31, size=total // 4, dtype=cp.int32)
    sink = cp.zeros(1, dtype=cp.uint32)
    out = {}
    for ctas in (sms, sms - 4):
        per_cta = (total // 16) // ctas // 4096 * 4096
        rec = cp.zeros(3 * ctas, dtype=cp.uint64)
        runs = []
        for it in range(12):
            k((ctas,), (512,), (buf, np.int64(per_cta), rec, sink))
            cp.cuda.runtime.deviceSynchronize()
            if it < 2:
                continue
            r = cp.asnumpy(rec).reshape(ctas, 3).astype(np.int64)
            start0 = r[:, 1].min()
            dur = np.full(sms, np.nan)
            dur[r[:, 0]] = (r[:, 2] - start0) / 1000.0       # end of each SM's CTA, us after the first start
            runs.append(dur)
        d = np.array(runs)                                    # [run, smid]
        busy = ~np.isnan(d[0])
        d = d[:, busy]
        corr = [float(np.corrcoef(ranks(d[i]), ranks(d[j]))[0, 1]) for i in range(len(d)) for j in range(i + 1, len(d))]
        mean = d.mean(axis=0)
        slow = np.argsort(-mean)[:8]
        smids = np.nonzero(busy)[0]
        line = {"ctas": ctas, "end_us_p10_p50_max_per_run": [[round(float(np.percentile(x, q)), 1) for q in (10, 50, 100)]
                                                             for x in d],
                "rank_corr_between_runs_min_median": [round(min(corr), 3), round(float(np.median(corr)), 3)],
                "slowest_smids_by_mean": [int(smids[i]) for i in slow],
                "their_mean_end_us": [round(float(mean[i]), 1) for i in slow],
                "mean_end_us_p10_p50_max": [round(float(np.percentile(mean, q)), 1) for q in (10, 50, 100)],
                "idle_smids": [int(i) for i in np.nonzero(~busy)[0]]}
        out[str(ctas)] = line
        print(json.dumps(line), flush=True)
        # per-SM mean end, in smid order, to look for a pattern (GPC/TPC groups)
        print("mean end by smid:", " ".join(f"{i}:{m:.0f}" for i, m in zip(smids, mean)), flush=True)
    json.dump(out, sys.stderr)


if __name__ == "__main__":
    main()
