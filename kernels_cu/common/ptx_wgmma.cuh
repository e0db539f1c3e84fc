// wgmma (warpgroup MMA, sm_90a) wrappers: only the shapes the decode kernel uses.
// PTX ISA: https://docs.nvidia.com/cuda/parallel-thread-execution/#asynchronous-warpgroup-level-matrix-instructions
// Accumulator fragment of m64nNk16 (f32): thread t of the warpgroup holds d[4j+v] at
//   row = 16*(t/32) + (t%32)/4 + 8*(v/2),  col = 8*j + 2*(t%4) + (v%2).
#pragma once
#include "nvrtc_shim.cuh"

namespace fmla {

// Shared-memory matrix descriptor, 128-byte swizzle (the layout TMA SWIZZLE_128B and our cp.async
// writer produce: 8-row x 128-B atoms, 1024-B aligned, 16-B chunk index XOR (row % 8)).
// PTX ISA #asynchronous-warpgroup-level-matrix-shared-memory-layout-matrix-descriptor:
// bits 0-13 start>>4, 16-29 leading byte offset>>4, 32-45 stride byte offset>>4, 62-63 swizzle (1 = 128B).
__device__ __forceinline__ uint64_t smem_desc_sw128(uint32_t smem_addr, uint32_t lbo_bytes, uint32_t sbo_bytes) {
  return (uint64_t)((smem_addr & 0x3FFFFu) >> 4) | ((uint64_t)(lbo_bytes >> 4) << 16) |
         ((uint64_t)(sbo_bytes >> 4) << 32) | (1ull << 62);
}

// K-major operand (rows of 64 K-elements = 128 B): LBO unused (1), SBO = 1024 B to the next 8-row group.
__device__ __forceinline__ uint64_t desc_k_major(uint32_t smem_addr) {
  return smem_desc_sw128(smem_addr, 16, 1024);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  static_assert(N >= 0 && N <= 7, "wgmma.wait_group takes 0..7");
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

// Keep accumulator registers from being read before wgmma_wait (the compiler cannot see the async write).
template <int N>
__device__ __forceinline__ void fence_accumulators(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

#define FMLA_WGMMA_M64N64K16_SS(TYPE)                                                                   \
  asm volatile(                                                                              \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                                            \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." TYPE "." TYPE " "                             \
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "  \
      "%32, %33, p, 1, 1, 0, 0;\n}\n"                                                     \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]) \
      : "l"(desc_a), "l"(desc_b), "r"(accumulate))

// D[64x64] (+)= A[64x16] * B[16x64]; A and B K-major in shared memory. accumulate = 0 overwrites D.
template <bool kBF16>
__device__ __forceinline__ void wgmma_m64n64k16_ss(float (&d)[32], uint64_t desc_a, uint64_t desc_b, int accumulate) {
  if constexpr (kBF16) FMLA_WGMMA_M64N64K16_SS("bf16"); else FMLA_WGMMA_M64N64K16_SS("f16");
}

// The 128 f32 accumulators of an m64n256 wgmma (operands %0..%127), shared by the n256 wrappers below.
#define FMLA_WGMMA_D128_REGS "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}"
#define FMLA_WGMMA_D128_OUTPUTS \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
    "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
    "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
    "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
    "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
    "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
    "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
    "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), \
    "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), \
    "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), \
    "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), \
    "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), \
    "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), \
    "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), \
    "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), \
    "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])

#define FMLA_WGMMA_M64N256K16_SS_TB(TYPE)                                                        \
  asm volatile(                                                                              \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"                                            \
      "wgmma.mma_async.sync.aligned.m64n256k16.f32." TYPE "." TYPE " "                       \
      FMLA_WGMMA_D128_REGS ", %128, %129, p, 1, 1, 0, 1;\n}\n"                                \
      : FMLA_WGMMA_D128_OUTPUTS                                                               \
      : "l"(desc_a), "l"(desc_b), "r"(accumulate))

// D[64x256] (+)= A[64x16] * B[16x256]; A K-major, B MN-major (transposed: imm-trans-b = 1), both in smem.
template <bool kBF16>
__device__ __forceinline__ void wgmma_m64n256k16_ss_tb(float (&d)[128], uint64_t desc_a, uint64_t desc_b,
                                                      int accumulate) {
  if constexpr (kBF16) FMLA_WGMMA_M64N256K16_SS_TB("bf16"); else FMLA_WGMMA_M64N256K16_SS_TB("f16");
}

#define FMLA_WGMMA_M64N256K16_RS_TB(TYPE)                                                        \
  asm volatile(                                                                              \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"                                            \
      "wgmma.mma_async.sync.aligned.m64n256k16.f32." TYPE "." TYPE " "                       \
      FMLA_WGMMA_D128_REGS ", {%128, %129, %130, %131}, %132, p, 1, 1, 1;\n}\n"              \
      : FMLA_WGMMA_D128_OUTPUTS                                                               \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "n"(1))

// D[64x256] += A[64x16] * B[16x256]; A from registers (the m64k16 A fragment: a[i] packs two 16-bit values,
// rows/cols as the f32 accumulator fragment of m64nNk16 restricted to 16 columns), B MN-major in smem.
template <bool kBF16>
__device__ __forceinline__ void wgmma_m64n256k16_rs_tb(float (&d)[128], const uint32_t (&a)[4], uint64_t desc_b) {
  if constexpr (kBF16) FMLA_WGMMA_M64N256K16_RS_TB("bf16"); else FMLA_WGMMA_M64N256K16_RS_TB("f16");
}

// Narrow shapes (the small-head kernel, mla_decode_narrow_sm90.cu): D[64xN] (+)= A[64x16] * B[16xN], N = 16 or 32,
// both operands in shared memory, B K-major; kTransA = 1 reads A MN-major (imm-trans-a). accumulate = 0
// overwrites D.
#define FMLA_WGMMA_M64N16K16_SS(TYPE)                                                           \
  asm volatile(                                                                              \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"                                            \
      "wgmma.mma_async.sync.aligned.m64n16k16.f32." TYPE "." TYPE " "                          \
      "{%0, %1, %2, %3, %4, %5, %6, %7}, %8, %9, p, 1, 1, %11, 0;\n}\n"                       \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]) \
      : "l"(desc_a), "l"(desc_b), "r"(accumulate), "n"(kTransA))
#define FMLA_WGMMA_M64N32K16_SS(TYPE)                                                           \
  asm volatile(                                                                              \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"                                            \
      "wgmma.mma_async.sync.aligned.m64n32k16.f32." TYPE "." TYPE " "                          \
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, %19, 0;\n}\n" \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]) \
      : "l"(desc_a), "l"(desc_b), "r"(accumulate), "n"(kTransA))

template <int N, bool kBF16, int kTransA>
__device__ __forceinline__ void wgmma_narrow_ss(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, int accumulate) {
  static_assert(N == 16 || N == 32, "narrow wgmma: N is 16 or 32");
  if constexpr (N == 16) {
    if constexpr (kBF16) FMLA_WGMMA_M64N16K16_SS("bf16"); else FMLA_WGMMA_M64N16K16_SS("f16");
  } else {
    if constexpr (kBF16) FMLA_WGMMA_M64N32K16_SS("bf16"); else FMLA_WGMMA_M64N32K16_SS("f16");
  }
}

}  // namespace fmla
