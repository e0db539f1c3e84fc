// Merge split-KV partials: for each (request, KV head, packed row) with more than one split,
//   lse = log2 sum_k 2^lse_k,  O = sum_k 2^(lse_k - lse) O_k   (partials are already normalised).
// One warp per (row, quarter of the 512 columns): grid (b, rows / 8, 4), a lane owns one float4. Few requests
// with many splits (b = 1, long) would leave most SMs idle with a warp per row, and a split loop with one load
// in flight is latency-bound: each step of the loop issues 8 splits' loads (predicated past the last split) before
// using any, so a row with 2 splits costs one round trip, not two. Rows of unsplit requests were written
// by the decode kernel and are skipped. All partials empty -> out 0, lse +inf (FlashMLA's convention).
#include "common/nvrtc_shim.cuh"
#include "common/softmax.cuh"
#include "common/decode_params.cuh"

namespace fmla {

// kernels.COMBINE_THREADS and COMBINE_ROWS_PER_CTA (one warp per row). An enum, so nothing lands in the module.
enum : int { kCombineThreads = 256, kCombineRowsPerCta = kCombineThreads / 32, kCombineColumnSplits = 4,
             kCombineSplitsInFlight = 8 };
#ifdef FMLA_EXPECT_COMBINE_THREADS
static_assert(kCombineThreads == FMLA_EXPECT_COMBINE_THREADS, "kernels.COMBINE_THREADS differs");
static_assert(kCombineRowsPerCta == FMLA_EXPECT_COMBINE_ROWS, "kernels.COMBINE_ROWS_PER_CTA differs");
static_assert(kCombineColumnSplits == FMLA_EXPECT_COMBINE_COLUMN_SPLITS, "kernels.COMBINE_COLUMN_SPLITS differs");
#endif

template <bool kBF16>
__device__ __forceinline__ void store4(void* dst, float4 v) {
  if constexpr (kBF16) {
    __nv_bfloat162 a = __floats2bfloat162_rn(v.x, v.y), b = __floats2bfloat162_rn(v.z, v.w);
    uint2 u = make_uint2(*reinterpret_cast<uint32_t*>(&a), *reinterpret_cast<uint32_t*>(&b));
    *reinterpret_cast<uint2*>(dst) = u;
  } else {
    __half2 a = __floats2half2_rn(v.x, v.y), b = __floats2half2_rn(v.z, v.w);
    uint2 u = make_uint2(*reinterpret_cast<uint32_t*>(&a), *reinterpret_cast<uint32_t*>(&b));
    *reinterpret_cast<uint2*>(dst) = u;
  }
}

// acc += w v, where a weight of 0 (an empty partial) contributes nothing whatever its O holds.
__device__ __forceinline__ void accumulate(float4& acc, float w, float4 v) {
  const bool use = w != 0.f;
  acc.x += use ? w * v.x : 0.f;
  acc.y += use ? w * v.y : 0.f;
  acc.z += use ? w * v.z : 0.f;
  acc.w += use ? w * v.w : 0.f;
}

template <bool kBF16>
__device__ void combine_row(const DecodeParams& p) {
  const int req = blockIdx.x;
  const int flat = blockIdx.y * kCombineRowsPerCta + threadIdx.x / 32;   // hk * rows + r
  const int lane = threadIdx.x & 31;
  const int rows = (int)p.rows;
  if (flat >= p.h_kv * rows) return;
  const int split0 = p.num_splits[req], n_splits = p.num_splits[req + 1] - split0;
  if (n_splits <= 1) return;
  const int hk = flat / rows, r = flat % rows;
  const int s = r / (int)p.ngroups, head = hk * (int)p.ngroups + r % (int)p.ngroups;
  const int64_t stride = p.h_kv * rows;                        // between consecutive splits of one row
  const float* lse_k = p.lse_accum + (int64_t)split0 * stride + flat;

  float mx = neg_inf();
  for (int k = lane; k < n_splits; k += 32) mx = fmaxf(mx, lse_k[k * stride]);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  float sum = 0.f;
  if (mx != neg_inf())
    for (int k = lane; k < n_splits; k += 32) sum += exp2f(lse_k[k * stride] - mx);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  const bool empty = !(sum > 0.f);
  const float lse2 = empty ? neg_inf() : mx + log2f(sum);

  const int quarter = blockIdx.z, col = (kHeadDimV / kCombineColumnSplits) * quarter + 4 * lane;
  const int64_t split_step = stride * kHeadDimV;               // floats between one row's consecutive partials
  const float* src = p.o_accum + ((int64_t)split0 * stride + flat) * kHeadDimV + col;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  if (!empty) {
    for (int k = 0; k < n_splits; k += kCombineSplitsInFlight) {
      float w[kCombineSplitsInFlight];
      float4 v[kCombineSplitsInFlight];
#pragma unroll
      for (int j = 0; j < kCombineSplitsInFlight; ++j) {
        const bool real = k + j < n_splits;               // past the last split: weight 0, nothing read
        w[j] = real ? exp2f(lse_k[(k + j) * stride] - lse2) : 0.f;
        v[j] = real ? *reinterpret_cast<const float4*>(src + (k + j) * split_step) : make_float4(0.f, 0.f, 0.f, 0.f);
      }
#pragma unroll
      for (int j = 0; j < kCombineSplitsInFlight; ++j) accumulate(acc, w[j], v[j]);
    }
  }
  uint8_t* dst = static_cast<uint8_t*>(p.out) + 2 * out_row_offset(p, req, s, head);
  store4<kBF16>(dst + 2 * col, acc);
  if (lane == 0 && quarter == 0)
    p.lse[lse_index(p, req, s, head)] = empty ? pos_inf() : lse2 * 0.69314718056f;
}

}  // namespace fmla

// grid (b, ceil(h_kv * rows / 8), 4 column quarters), 256 threads = 8 rows.
extern "C" __global__ void __launch_bounds__(fmla::kCombineThreads) mla_combine_bf16(const __grid_constant__ fmla::DecodeParams p) {
  fmla::combine_row<true>(p);
}
extern "C" __global__ void __launch_bounds__(fmla::kCombineThreads) mla_combine_fp16(const __grid_constant__ fmla::DecodeParams p) {
  fmla::combine_row<false>(p);
}
