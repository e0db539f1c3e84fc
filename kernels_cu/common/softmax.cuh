// Online-softmax building blocks in the exp2 domain (scores are pre-multiplied by scale*log2(e)).
#pragma once
#include "nvrtc_shim.cuh"

namespace fmla {

// Running-max initial value: finite, so exp2(masked - max) = exp2(-inf) = 0 and exp2(init - init) = 1
// never produce NaN; real maxima (|score * scale * log2e| << 1e30) always replace it.
constexpr float kMaxInit = -1e30f;

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }
__device__ __forceinline__ float pos_inf() { return __int_as_float(0x7f800000); }

__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Four threads of a quad share one accumulator row: reduce across them.
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// Log-sum-exp of a finished row in log2 units; -inf when nothing was attended (sum == 0 or NaN).
__device__ __forceinline__ float row_lse2(float row_max, float row_sum) {
  return (row_sum > 0.f) ? row_max + log2f(row_sum) : neg_inf();
}

// Final LSE in natural log; +inf for a row with no key (FlashMLA's convention).
__device__ __forceinline__ float lse_natural(float lse2) {
  return (lse2 == neg_inf()) ? pos_inf() : lse2 * 0.69314718056f;
}

// Two floats as one 16-bit pair (bf16 or fp16), low half first.
template <bool kBF16>
__device__ __forceinline__ uint32_t pack2(float a, float b) {
  if constexpr (kBF16) {
    __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  } else {
    __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
}

}  // namespace fmla
