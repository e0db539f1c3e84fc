"""Device probe: how fast can one SM pull bytes into shared memory with bulk copies, by bytes in flight, from DRAM
and from L2? And does a pair of SMs reading the same bytes (row 24's two m-block CTAs) get them faster?

Row 24 (b1 h128 65K, target 30 us) moves ~31 GB/s into each SM (1.14 MB per SM in ~37 us of pairs), the same
rate per SM as the DRAM-bound rows (NOTES, "Row 24 ... what bounds it"), although half of its bytes are L2 hits.
If the L2-resident rate at the decode's ~147 KB in flight is also ~31 GB/s and grows with the bytes in flight, the
per-SM chain is latency-bound (deeper or differently shaped stages could help); if it is much higher, row 24 is
bound by something else (its DRAM half, or the decode's own waits). The two-SM multicast tried in call 44 assumed
L2 bandwidth was the limit.

One CTA per SM; thread 0 keeps `k` bulk copies of `chunk` bytes in flight (cp.async.bulk global->shared, one
mbarrier each, as the decode's producer does with its tiles), over `per_cta` bytes. Source offsets wrap inside a
`working_set`: 24 MB stays in L2 after the first pass, 1.2 GB streams from DRAM. `share` = 2: CTAs 2i and 2i+1
read the same offsets at the same time. Each config runs 7 times (2 warm-up); per-SM GB/s is per_cta over the
CTA's own span, aggregate is all bytes over the kernel's span. Prints one JSON line per config.
Then the same with the decode kernels' tensor maps and box shapes (`tensor_stream`).
Usage (device): python3 bench/l2_rate_probe.py > $OUT/l2_rate_probe.txt
"""
import json
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))   # the package of this checkout, unless PYTHONPATH has one

PROBE = r"""
#include "common/nvrtc_shim.cuh"
#include "common/ptx_async.cuh"
#include "common/ptx_tma.cuh"

namespace fmla {
constexpr int kMaxInFlight = 32;

// `bytes` (a multiple of 16) from global `src` into shared `dst`, completing on `bar` (complete_tx).
// PTX ISA #data-movement-and-conversion-instructions-cp-async-bulk
__device__ __forceinline__ void bulk_copy_g2s(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
               ::"r"(dst), "l"(src), "r"(bytes), "r"(bar) : "memory");
}

__device__ __forceinline__ unsigned long long now_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Waits for the last k of the n copies (slot i % k, phase i / k), then records (SM id, start, end) of this CTA.
__device__ __forceinline__ void drain_and_record(uint32_t bar0, long long n, int k, unsigned long long t0,
                                                 unsigned long long* rec) {
  for (long long i = (n > k ? n - k : 0); i < n; ++i) mbarrier_wait(bar0 + 8 * (int)(i % k), (uint32_t)((i / k) & 1));
  const unsigned long long t1 = now_ns();
  unsigned smid;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
  rec[3 * blockIdx.x] = smid;
  rec[3 * blockIdx.x + 1] = t0;
  rec[3 * blockIdx.x + 2] = t1;
}
}  // namespace fmla

extern "C" __global__ void __launch_bounds__(32, 1)
bulk_stream(const uint8_t* buf, long long working_set, long long per_cta, int chunk, int k, int share,
            unsigned long long* rec) {
  using namespace fmla;
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  __shared__ __align__(8) uint64_t bars[kMaxInFlight];
  const uint32_t base = smem_u32(smem_raw), bar0 = smem_u32(bars);
  if (threadIdx.x != 0) return;
  for (int i = 0; i < k; ++i) mbarrier_init(bar0 + 8 * i, 1);
  fence_mbarrier_init();
  const unsigned long long t0 = now_ns();
  // Each group of `share` CTAs starts at its own place in the working set, spread evenly over it.
  const long long groups = (gridDim.x + share - 1) / share;
  const long long start = ((long long)(blockIdx.x / share) * (working_set / groups)) / 16 * 16;
  const long long n = per_cta / chunk;
  for (long long i = 0; i < n; ++i) {
    const int slot = (int)(i % k);
    const uint32_t bar = bar0 + 8 * slot;
    if (i >= k) mbarrier_wait(bar, (uint32_t)((i / k - 1) & 1));
    long long off = (start + i * chunk) % working_set;
    if (off + chunk > working_set) off = 0;
    mbarrier_arrive_expect_tx(bar, chunk);
    bulk_copy_g2s(base + slot * chunk, buf + off, chunk, bar);
  }
  drain_and_record(bar0, n, k, t0, rec);
}

// The same stream with the decode kernels' own tensor maps (kernels.py _row_walk_map over a [pages, 64, 1, 576]
// cache): boxes of 1 tile (8 KB, the seesaw's RoPE region), 4 tiles (32 KB, a V half) or 9 (73.7 KB, the narrow
// kernel's block). pattern 0: nine 1-tile boxes a block, 1: two 4-tile boxes, 2: one 9-tile box, 3: the seesaw's
// regions (4 tiles, 4 tiles, 1 tile).
extern "C" __global__ void __launch_bounds__(32, 1)
tensor_stream(const __grid_constant__ fmla::TmaDesc map1, const __grid_constant__ fmla::TmaDesc map4,
              const __grid_constant__ fmla::TmaDesc map9, long long ws_pages, int blocks_per_cta, int pattern, int k,
              uint32_t slot_bytes, unsigned long long* rec) {
  using namespace fmla;
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  __shared__ __align__(8) uint64_t bars[kMaxInFlight];
  const uint32_t base = (smem_u32(smem_raw) + 1023u) & ~1023u, bar0 = smem_u32(bars);
  if (threadIdx.x != 0) return;
  for (int i = 0; i < k; ++i) mbarrier_init(bar0 + 8 * i, 1);
  fence_mbarrier_init();
  const int per_block = pattern == 0 ? 9 : pattern == 1 ? 2 : pattern == 2 ? 1 : 3;
  const long long start = (long long)blockIdx.x * (ws_pages / gridDim.x);
  const long long n = (long long)blocks_per_cta * per_block;
  const unsigned long long t0 = now_ns();
  for (long long i = 0; i < n; ++i) {
    const int slot = (int)(i % k), c = (int)(i % per_block);
    const uint32_t bar = bar0 + 8 * slot;
    if (i >= k) mbarrier_wait(bar, (uint32_t)((i / k - 1) & 1));
    const TmaDesc* map = &map1;
    int tile = c, bytes = 8192;
    if (pattern == 1 || (pattern == 3 && c < 2)) { map = &map4; tile = 4 * c; bytes = 32768; }
    if (pattern == 2) { map = &map9; tile = 0; bytes = 73728; }
    if (pattern == 3 && c == 2) tile = 8;
    mbarrier_arrive_expect_tx(bar, bytes);
    tma_load_5d(base + slot * slot_bytes, map, 0, 0, tile, 0, (int)((start + i / per_block) % ws_pages), bar, false);
  }
  drain_and_record(bar0, n, k, t0, rec);
}
"""

MB = 1 << 20
# (label, working set, chunk bytes, chunks in flight, share): the decode keeps 18 tiles of 8 KB in flight (two
# 73.7-KB stages); shared memory allows up to 27 of them.
CONFIGS = [(f"{where} k{k}", ws, 8192, k, 1) for where, ws in (("dram", 1200 * MB), ("l2", 24 * MB))
           for k in (2, 4, 9, 18, 27)]
CONFIGS += [("dram 73.7KB boxes k2", 1200 * MB, 73728, 2, 1), ("l2 73.7KB boxes k2", 24 * MB, 73728, 2, 1),
            ("row24-like pair k18", 75 * MB, 8192, 18, 2), ("row24-like single k18", 75 * MB, 8192, 18, 1),
            ("l2 pair k18", 24 * MB, 8192, 18, 2),
            # copy size at equal bytes in flight (call 90: 8-KB copies held an SM at 25 GB/s at any depth)
            ("l2 16KB k9", 24 * MB, 16384, 9, 1), ("l2 32KB k4", 24 * MB, 32768, 4, 1),
            ("l2 73.7KB boxes k1", 24 * MB, 73728, 1, 1), ("l2 73.7KB boxes k3", 24 * MB, 73728, 3, 1),
            ("dram 32KB k4", 1200 * MB, 32768, 4, 1), ("dram 73.7KB boxes k3", 1200 * MB, 73728, 3, 1)]

# (label, working set, pattern, copies in flight): the tensor-map stream of the decode kernels' boxes.
PAGE_BYTES = 64 * 576 * 2
TENSOR_CONFIGS = [(f"tensor {where} {name} k{k}", ws, pattern, k)
                  for where, ws in (("l2", 24 * MB), ("dram", 1200 * MB))
                  for name, pattern, k in (("8KB boxes", 0, 18), ("32KB boxes", 1, 6), ("73.7KB boxes", 2, 2),
                                           ("73.7KB boxes", 2, 3), ("seesaw regions", 3, 6))]


def build():
    """The probe's cubin, through the package's compiler (includes resolve against kernels_cu/; not cached)."""
    from flashmla_rt.jit import compiler
    return compiler.compile_text(PROBE, "l2_rate_probe")


def main():
    import cupy as cp
    import numpy as np
    mod = cp.cuda.function.Module()
    mod.load(build())
    fn = mod.get_function("bulk_stream")
    cp.cuda.driver.funcSetAttribute(fn.ptr, cp.cuda.driver.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 27 * 8192)
    sms = cp.cuda.Device().attributes["MultiProcessorCount"]
    buf = cp.random.randint(0, 2**31, size=1200 * MB // 4, dtype=cp.int32)
    rec = cp.zeros(3 * sms, dtype=cp.uint64)
    per_cta = 8 * MB                                           # ~7x row 24's 1.14 MB per SM: steady state
    for label, ws, chunk, k, share in CONFIGS:
        args = (buf, np.int64(ws), np.int64(per_cta), np.int32(chunk), np.int32(k), np.int32(share), rec)
        line = measure(fn, args, chunk * k, rec, per_cta)
        line["unique_bytes_GBps_median"] = round(line["aggregate_GBps_median"] / share, 0)
        print(json.dumps({"config": label, "in_flight_KB": round(chunk * k / 1024, 1), "share": share, **line}),
              flush=True)
    tensor_stream(mod, buf, sms)


def tensor_stream(mod, buf, sms):
    """TENSOR_CONFIGS through the decode kernels' row-walking tensor maps over `buf` seen as a paged cache."""
    import cupy as cp
    import numpy as np
    from flashmla_rt import kernels
    from flashmla_rt.jit import tma
    fn = mod.get_function("tensor_stream")
    cp.cuda.driver.funcSetAttribute(fn.ptr, cp.cuda.driver.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                    3 * 73728 + 1024)
    pages = buf.nbytes // PAGE_BYTES
    shape, strides = (pages, 64, 1, 576), (64 * 576, 576, 576, 1)
    maps = [kernels._row_walk_map(buf.data.ptr, shape, strides, t, tma.L2_PROMOTION_256B) for t in (1, 4, 9)]
    rec = cp.zeros(3 * sms, dtype=cp.uint64)
    blocks_per_cta = 8 * MB // PAGE_BYTES
    for label, ws, pattern, k in TENSOR_CONFIGS:
        slot = 8192 if pattern == 0 else 73728 if pattern == 2 else 32768
        block_bytes = 65536 if pattern == 1 else PAGE_BYTES
        args = (*maps, np.int64(ws // PAGE_BYTES), np.int32(blocks_per_cta), np.int32(pattern), np.int32(k),
                np.uint32(slot), rec)
        line = measure(fn, args, slot * k + 1024, rec, blocks_per_cta * block_bytes)
        print(json.dumps({"config": label, "in_flight_KB": round(slot * k / 1024, 1), **line}), flush=True)


def measure(fn, args, smem, rec, moved):
    """7 launches of `fn` on one CTA per SM (the first 2 warm-up), each CTA moving `moved` bytes: per-SM GB/s
    (p10/p50/p90, each CTA over its own span) and the median aggregate (all bytes over the kernel's span)."""
    import cupy as cp
    import numpy as np
    sms = rec.size // 3
    per_sm, agg = [], []
    for it in range(7):
        fn((sms,), (32,), args, shared_mem=smem)
        cp.cuda.runtime.deviceSynchronize()
        if it < 2:
            continue
        r = cp.asnumpy(rec).reshape(sms, 3).astype(np.int64)
        per_sm.append(moved / ((r[:, 2] - r[:, 1]) / 1e9) / 1e9)
        agg.append(sms * moved / ((r[:, 2].max() - r[:, 1].min()) / 1e9) / 1e9)
    rates = np.concatenate(per_sm)
    return {"per_sm_GBps_p10_p50_p90": [round(float(np.percentile(rates, q)), 1) for q in (10, 50, 90)],
            "aggregate_GBps_median": round(float(np.median(agg)), 0)}


if __name__ == "__main__":
    main()
