"""Device probe: how long one CTA takes to get 64 KB of staged output from shared memory to global memory.

The seesaw's chunk epilogue spends ~3.5 us storing its 64 x 512 16-bit rows (call 51's trace), far longer than
64 KB at an SM's share of the write path should take. This times, per CTA with %globaltimer, the three ways to
drain a staged tile: 16-byte `st.global` by all 256 threads (what the kernels do), one bulk copy
(`cp.async.bulk.global.shared::cta`) issued by one thread and waited for until its source is read (`.read`: what a
CTA must wait for before it reuses or leaves the staging buffer), and the same waited for until the writes are done.
Each runs with 1 writing CTA alone, with 132 writing at once, and with 1 writer while 131 CTAs stream reads (DRAM
busy, as in a varlen row's epilogue). Usage (device): python3 bench/store_probe.py > $OUT/store_probe.txt
"""
import json
import sys

import cupy as cp
import numpy as np

SRC = r"""
extern "C" __device__ unsigned long long gtime() {
  unsigned long long t; asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); return t;
}
// mode 0: st.global.v4 by all threads; 1: one bulk copy, wait for its reads; 2: the same, wait for its writes.
// CTAs >= writers stream `reads` bytes each (their own slice of `rd`) instead; writers wait `delay_ns` first.
extern "C" __global__ void __launch_bounds__(256, 1)
probe(int mode, int writers, unsigned long long delay_ns, char* out, const uint4* rd, long long reads,
      unsigned long long* times, int* sink) {
  extern __shared__ __align__(1024) unsigned char smem[];
  const int tid = threadIdx.x, cta = blockIdx.x;
  if (cta >= writers) {                                   // background readers
    const uint4* p = rd + (long long)(cta - writers) * (reads / 16);
    unsigned acc = 0;
    for (long long i = tid; i < reads / 16; i += 256) { uint4 v = __ldcs(p + i); acc ^= v.x ^ v.w; }
    if (acc == 0x12345678u) sink[0] = acc;
    return;
  }
  for (int i = tid; i < 65536 / 4; i += 256) reinterpret_cast<unsigned*>(smem)[i] = i * 2654435761u + cta;
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
  __syncthreads();
  if (tid == 0) { const unsigned long long t = gtime(); while (gtime() - t < delay_ns) {} }
  __syncthreads();
  const unsigned long long t0 = gtime();
  char* dst = out + (long long)cta * 65536;
  if (mode == 0) {
    for (int i = tid; i < 4096; i += 256)
      reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(smem)[i];
  } else if (tid == 0) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], 65536;" :: "l"(dst), "r"(s) : "memory");
    asm volatile("cp.async.bulk.commit_group;" ::: "memory");
    if (mode == 1) asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
    else asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
  }
  __syncthreads();
  if (tid == 0) times[cta] = gtime() - t0;
}
"""


def main():
    mod = cp.RawModule(code=SRC, options=("-arch=sm_90a", "-std=c++17"), backend="nvrtc")
    k = mod.get_function("probe")
    k.max_dynamic_shared_size_bytes = 65536
    sms = cp.cuda.Device().attributes["MultiProcessorCount"]
    out_pool = cp.empty(512 << 20, dtype=cp.uint8)             # rotate the destinations: > L2
    reads = 4 << 20
    rd = cp.random.randint(0, 2**31, size=(sms * reads) // 4, dtype=cp.int32)
    times = cp.zeros(sms, dtype=cp.uint64)
    sink = cp.zeros(1, dtype=cp.int32)
    res = {}
    rot = 0
    for name, writers, bg in (("1 alone", 1, 0), (f"{sms} at once", sms, 0), ("1 with DRAM busy", 1, sms - 1)):
        for mode, mname in ((0, "st.global.v4"), (1, "bulk .read"), (2, "bulk writes")):
            samples = []
            for it in range(40):
                off = (rot % 48) * (sms * 65536); rot += 1
                dst = out_pool[off:]
                k((writers + bg,), (256,), (np.int32(mode), np.int32(writers), np.uint64(20000 if bg else 0),
                                            dst, rd, np.int64(reads), times, sink), shared_mem=65536)
                cp.cuda.runtime.deviceSynchronize()
                if it >= 5:
                    samples.append(cp.asnumpy(times[:writers]).astype(np.float64) / 1000.0)
            a = np.concatenate(samples)
            res[f"{name} / {mname}"] = {"p10": float(np.percentile(a, 10)), "p50": float(np.median(a)),
                                        "p90": float(np.percentile(a, 90)), "max": float(a.max())}
            r = res[f"{name} / {mname}"]
            print(f"{name:18s} {mname:14s} us per CTA: p10 {r['p10']:.2f} p50 {r['p50']:.2f} "
                  f"p90 {r['p90']:.2f} max {r['max']:.2f}", flush=True)
    json.dump(res, sys.stderr)


if __name__ == "__main__":
    main()
