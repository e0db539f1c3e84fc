// Thread-block-cluster wrappers (sm_90a), one per instruction: the cluster-wide barrier, arrivals on a barrier in
// another CTA of the cluster, and TMA loads multicast to several CTAs.
// PTX ISA: #parallel-synchronization-and-communication-instructions-barrier-cluster,
//          #parallel-synchronization-and-communication-instructions-mbarrier-arrive,
//          #data-movement-and-conversion-instructions-mapa,
//          #data-movement-and-conversion-instructions-cp-async-bulk-tensor (.multicast::cluster)
#pragma once
#include "nvrtc_shim.cuh"
#include "ptx_tma.cuh"

namespace fmla {

// This CTA's rank in its cluster. volatile: re-read where used rather than held in a register.
__device__ __forceinline__ uint32_t cluster_ctarank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return r;
}

// Every thread of every CTA of the cluster arrives, then waits for all of them. The non-.aligned form: the lanes
// of a warp may reach it apart (a producer lane still issuing while its idle lanes wait).
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release;\n"
               "barrier.cluster.wait.acquire;\n" ::: "memory");
}

// One arrival on the mbarrier at `bar`'s offset in CTA `rank` of the cluster (this CTA's own when rank is its own).
__device__ __forceinline__ void mbarrier_arrive_cluster(uint32_t bar, uint32_t rank) {
  asm volatile(
      "{\n.reg .b32 remote;\n"
      "mapa.shared::cluster.u32 remote, %0, %1;\n"
      "mbarrier.arrive.release.cluster.shared::cluster.b64 _, [remote];\n}\n" ::"r"(bar), "r"(rank)
      : "memory");
}

// mbarrier_wait whose acquire covers the cluster: the arrivals it waits for may come from another CTA.
__device__ __forceinline__ void mbarrier_wait_cluster(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n}\n" ::"r"(bar), "r"(parity) : "memory");
}

// tma_load_5d into every CTA of `cta_mask` (bit i = rank i): the box lands at `dst`'s offset in each, and
// completes its bytes on the mbarrier at `bar`'s offset in each.
__device__ __forceinline__ void tma_load_5d_multicast(uint32_t dst, const TmaDesc* desc, int c0, int c1, int c2,
                                                      int c3, int c4, uint32_t bar, uint16_t cta_mask) {
  asm volatile(
      "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster"
      " [%0], [%1, {%2, %3, %4, %5, %6}], [%7], %8;\n" ::"r"(dst), "l"(desc), "r"(c0), "r"(c1), "r"(c2), "r"(c3),
      "r"(c4), "r"(bar), "h"(cta_mask)
      : "memory");
}

}  // namespace fmla
