// mbarrier and TMA (cp.async.bulk.tensor) wrappers, one per instruction.
// PTX ISA: #parallel-synchronization-and-communication-instructions-mbarrier and
//          #data-movement-and-conversion-instructions-cp-async-bulk-tensor
#pragma once
#include "nvrtc_shim.cuh"

namespace fmla {

// Layout twin of CUtensorMap (128 B, 64-B aligned): <cuda.h> does not compile under NVRTC.
struct alignas(64) TmaDesc { unsigned long long opaque[16]; };

__device__ __forceinline__ void mbarrier_init(uint32_t bar, uint32_t arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(arrivals) : "memory");
}
// Make mbarrier initialisation visible to the async proxy (TMA complete_tx) before first use.
__device__ __forceinline__ void fence_mbarrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// One arrival that also announces `bytes` of transaction (the TMA copies complete them).
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// One plain arrival (e.g. a consumer warp releasing a buffer to the producer).
__device__ __forceinline__ void mbarrier_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Spin until the phase with the given parity has completed.
__device__ __forceinline__ void mbarrier_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n}\n" ::"r"(bar), "r"(parity) : "memory");
}

__device__ __forceinline__ void prefetch_tma_desc(const TmaDesc* desc) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(desc) : "memory");
}
// 5-D tiled TMA load; coordinates innermost first; out-of-range boxes are zero-filled and still count their full
// bytes on the barrier. `evict_first` marks the lines evict-first in L2 (the KV stream is read once); the narrow
// kernel sets it, the seesaw kernel does not (measured mixed there, bench/NOTES.md).
__device__ __forceinline__ void tma_load_5d(uint32_t dst, const TmaDesc* desc, int c0, int c1, int c2, int c3, int c4,
                                            uint32_t bar, bool evict_first) {
  if (evict_first) {
    uint64_t policy;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
    asm volatile(
        "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.L2::cache_hint"
        " [%0], [%1, {%2, %3, %4, %5, %6}], [%7], %8;\n" ::"r"(dst), "l"(desc), "r"(c0), "r"(c1), "r"(c2), "r"(c3),
        "r"(c4), "r"(bar), "l"(policy)
        : "memory");
  } else {
    asm volatile(
        "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
        " [%0], [%1, {%2, %3, %4, %5, %6}], [%7];\n" ::"r"(dst), "l"(desc), "r"(c0), "r"(c1), "r"(c2), "r"(c3),
        "r"(c4), "r"(bar)
        : "memory");
  }
}

// Warpgroup register reallocation (all 128 threads of the warpgroup execute it): a producer warpgroup gives
// registers back, consumers take them. PTX ISA #miscellaneous-instructions-setmaxnreg
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_dec() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs)); }
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_inc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs)); }

// Named-barrier halves: the producing side arrives (does not wait), the consuming side syncs.
__device__ __forceinline__ void named_barrier_arrive(int id, int num_threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(num_threads) : "memory");
}
__device__ __forceinline__ void named_barrier_sync_id(int id, int num_threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(num_threads) : "memory");
}

}  // namespace fmla
