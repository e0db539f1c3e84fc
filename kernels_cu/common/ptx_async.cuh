// Asynchronous copies and barriers (sm_80/sm_90 PTX), one wrapper per instruction.
#pragma once
#include "nvrtc_shim.cuh"

namespace fmla {

__device__ __forceinline__ uint32_t smem_u32(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }

// 16-byte global->shared copy that bypasses L1; src_bytes = 0 reads nothing and zero-fills the 16 bytes.
// PTX ISA #data-movement-and-conversion-instructions-cp-async
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, uint32_t src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
// 4-byte global->shared copy (through L1), e.g. block-table entries prefetched ahead of their use.
__device__ __forceinline__ void cp_async_4(uint32_t dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

// Generic-proxy writes to shared memory (st.shared, cp.async) become visible to the async proxy (wgmma
// operand reads). Each writing thread fences, then a barrier orders it before the MMA.
// PTX ISA #parallel-synchronization-and-communication-instructions-membar
__device__ __forceinline__ void fence_proxy_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// Shared-memory load the compiler may neither hoist nor reuse (volatile): for a thread on few registers,
// re-reading a loop-invariant value costs less than keeping it live and spilling it.
__device__ __forceinline__ int ld_shared_at_use(uint32_t addr) {
  int v;
  asm volatile("ld.volatile.shared.b32 %0, [%1];\n" : "=r"(v) : "r"(addr));
  return v;
}

__device__ __forceinline__ void st_shared_s32(uint32_t addr, int v) {
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
}
// Four 8x8 16-bit matrices from a warp's registers into shared memory (stmatrix, sm_90): register i of thread t
// holds row t / 4, columns 2 (t % 4) and +1 of matrix i (the mma accumulator fragment's layout), and threads
// 8 i .. 8 i + 7 give the 16-B row addresses of matrix i. One instruction writes what 4 st.shared.b32 a thread did.
// PTX ISA #warp-level-matrix-store-instruction-stmatrix
__device__ __forceinline__ void stmatrix_x4(uint32_t row_addr, uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(row_addr), "r"(r0), "r"(r1),
               "r"(r2), "r"(r3) : "memory");
}
__device__ __forceinline__ uint4 ld_shared_v4(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr)
               : "memory");
  return v;
}

}  // namespace fmla
