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

}  // namespace fmla
