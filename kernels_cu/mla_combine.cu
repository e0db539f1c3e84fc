// Merge split-KV partials: for each (request, KV head, packed row) with more than one split,
//   lse = log2 sum_k 2^lse_k,  O = sum_k 2^(lse_k - lse) O_k   (partials are already normalised).
// Many rows (mla_combine_*): one warp per row, grid (b, rows / 8, 1), a lane owns four float4s (one per quarter of
// the 512 columns). Few rows (mla_combine_wide_*, kernels.py picks it): that would leave most SMs idle, so one CTA
// per (row, quarter) and its 8 warps share the splits. The merge is latency-bound, so loads go out in batches
// before any is used. Many rows: with up to 32 splits the LSEs and the first 2 splits' partials together, then 2
// splits (8 float4s a lane) a step. Few rows: up to 72 splits, every LSE and every partial in one batch (one
// round trip for the row); past 72, the LSEs, then batches of 8 splits a warp. Past the last split nothing is
// read. Rows of unsplit requests were written by the decode kernel and are skipped. All partials empty -> out 0,
// lse +inf (FlashMLA's convention).
#include "common/nvrtc_shim.cuh"
#include "common/trace_cta.cuh"
#include "common/ptx_grid.cuh"
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
  *reinterpret_cast<uint2*>(dst) = make_uint2(pack2<kBF16>(v.x, v.y), pack2<kBF16>(v.z, v.w));
}

// acc += w v, where a weight of 0 (an empty partial) contributes nothing whatever its O holds.
__device__ __forceinline__ void accumulate(float4& acc, float w, float4 v) {
  const bool use = w != 0.f;
  acc.x += use ? w * v.x : 0.f;
  acc.y += use ? w * v.y : 0.f;
  acc.z += use ? w * v.z : 0.f;
  acc.w += use ? w * v.w : 0.f;
}

// One (request, KV head, packed row) to merge: where its partials are.
struct CombineRow {
  int req, flat, split0, n_splits, s, head;
  int64_t stride;                                               // between consecutive splits of one row
  const float* lse_k;                                           // log2 LSE of split k at lse_k[k * stride]
};

__device__ __forceinline__ CombineRow combine_row_of(const DecodeParams& p, int req, int flat) {
  CombineRow c;
  const int rows = (int)p.rows;
  c.req = req;
  c.flat = flat;                                                // hk * rows + r
  c.split0 = p.num_splits[req];
  c.n_splits = p.num_splits[req + 1] - c.split0;
  const int hk = flat / rows, r = flat % rows;
  c.s = r / (int)p.ngroups;
  c.head = hk * (int)p.ngroups + r % (int)p.ngroups;
  c.stride = p.h_kv * rows;
  c.lse_k = p.lse_accum + (int64_t)c.split0 * c.stride + flat;
  return c;
}

// This lane's 4 columns of the row's first partial; split k is k * stride * kHeadDimV floats further.
__device__ __forceinline__ const float* partial0(const DecodeParams& p, const CombineRow& c, int col) {
  return p.o_accum + ((int64_t)c.split0 * c.stride + c.flat) * kHeadDimV + col;
}
// Reductions over the 32 lanes of a warp.
__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// log2 of the merged LSE (-inf when every partial is empty); the 32 lanes of a warp share the splits.
__device__ __forceinline__ float merged_lse2(const CombineRow& c, int lane) {
  float mx = neg_inf();
  for (int k = lane; k < c.n_splits; k += 32) mx = fmaxf(mx, c.lse_k[k * c.stride]);
  mx = warp_max(mx);
  float sum = 0.f;
  if (mx != neg_inf())
    for (int k = lane; k < c.n_splits; k += 32) sum += exp2f(c.lse_k[k * c.stride] - mx);
  sum = warp_sum(sum);
  return row_lse2(mx, sum);
}

// log2 of the merged LSE of a row whose LSEs sit in registers, kSlots a lane (-inf past the last split); -inf when
// every partial is empty.
template <int kSlots>
__device__ __forceinline__ float lse2_of_slots(const float (&lse)[kSlots]) {
  float mx = lse[0];
#pragma unroll
  for (int s = 1; s < kSlots; ++s) mx = fmaxf(mx, lse[s]);
  mx = warp_max(mx);
  float sum = 0.f;
  if (mx != neg_inf()) {
#pragma unroll
    for (int s = 0; s < kSlots; ++s) sum += exp2f(lse[s] - mx);   // exp2(-inf) = 0 past the last split
  }
  return row_lse2(mx, warp_sum(sum));
}

// kQ float4s of one lane: columns col + kQuarterCols * q, q < kQ (kQ = 4: the whole row across the warp).
constexpr int kQuarterCols = kHeadDimV / 4;
template <int kQ>
struct Lane4s {
  float4 v[kQ];
};

template <int kQ>
__device__ __forceinline__ Lane4s<kQ> load_lane(const float* src, bool real) {
  Lane4s<kQ> x;
#pragma unroll
  for (int q = 0; q < kQ; ++q)
    x.v[q] = real ? *reinterpret_cast<const float4*>(src + kQuarterCols * q) : make_float4(0.f, 0.f, 0.f, 0.f);
  return x;
}
template <int kQ>
__device__ __forceinline__ void accumulate(Lane4s<kQ>& acc, float w, const Lane4s<kQ>& v) {
#pragma unroll
  for (int q = 0; q < kQ; ++q) accumulate(acc.v[q], w, v.v[q]);
}
template <int kQ>
__device__ __forceinline__ Lane4s<kQ> zero_lane() {
  return load_lane<kQ>(nullptr, false);
}

// sum over splits k = k0, k0 + step, ... of 2^(lse_k - lse2) O_k at this lane's kQ float4s from `col`: each step
// of the loop issues the loads of kCombineSplitsInFlight / kQ splits (predicated past the last split) before
// using any.
template <int kQ>
__device__ __forceinline__ Lane4s<kQ> weighted_sum(const DecodeParams& p, const CombineRow& c, float lse2, int col,
                                                   int k0, int step) {
  constexpr int kF = kCombineSplitsInFlight / kQ;
  const int64_t split_step = c.stride * kHeadDimV;              // floats between one row's consecutive partials
  const float* src = partial0(p, c, col);
  Lane4s<kQ> acc = zero_lane<kQ>();
  for (int k = k0; k < c.n_splits; k += kF * step) {
    float w[kF];
    Lane4s<kQ> v[kF];
#pragma unroll
    for (int j = 0; j < kF; ++j) {
      const int kj = k + j * step;
      const bool real = kj < c.n_splits;                        // past the last split: weight 0, nothing read
      w[j] = real ? exp2f(c.lse_k[kj * c.stride] - lse2) : 0.f;
      v[j] = load_lane<kQ>(src + kj * split_step, real);
    }
#pragma unroll
    for (int j = 0; j < kF; ++j) accumulate(acc, w[j], v[j]);
  }
  return acc;
}

// out[req, s, head, col..col+3] = acc (16-bit); lse (natural log, +inf when empty) once per row.
template <bool kBF16>
__device__ __forceinline__ void store_row(const DecodeParams& p, const CombineRow& c, float lse2, float4 acc, int col,
                                          bool write_lse) {
  uint8_t* dst = static_cast<uint8_t*>(p.out) + 2 * out_row_offset(p, c.req, c.s, c.head);
  store4<kBF16>(dst + 2 * col, acc);
  if (write_lse)
    p.lse[lse_index(p, c.req, c.s, c.head)] = lse_natural(lse2);
}

// Up to 32 splits (lane k holds split k's LSE): the LSEs and the first kCombineSplitsInFlight / kQ splits'
// partials are loaded together, since the partials do not depend on them, so a row with that many splits costs
// one round trip to memory.
template <int kQ>
__device__ __forceinline__ Lane4s<kQ> merge_up_to_32(const DecodeParams& p, const CombineRow& c, int col, int lane,
                                                     float& lse2) {
  constexpr int kF = kCombineSplitsInFlight / kQ;
  const int64_t split_step = c.stride * kHeadDimV;
  const float* src = partial0(p, c, col);
  const float my_lse = lane < c.n_splits ? c.lse_k[lane * c.stride] : neg_inf();
  Lane4s<kQ> v[kF];
#pragma unroll
  for (int j = 0; j < kF; ++j) v[j] = load_lane<kQ>(src + j * split_step, j < c.n_splits);
  const float lse_slot[1] = {my_lse};
  lse2 = lse2_of_slots(lse_slot);
  Lane4s<kQ> acc = zero_lane<kQ>();
  if (lse2 == neg_inf()) return acc;                            // every partial is empty
#pragma unroll
  for (int j = 0; j < kF; ++j)                                  // weight 0 past the last split: v[j] unused
    accumulate(acc, exp2f(__shfl_sync(0xffffffffu, my_lse, j) - lse2), v[j]);
  for (int k = kF; k < c.n_splits; k += kF) {
    Lane4s<kQ> u[kF];
#pragma unroll
    for (int j = 0; j < kF; ++j) u[j] = load_lane<kQ>(src + (k + j) * split_step, k + j < c.n_splits);
#pragma unroll
    for (int j = 0; j < kF; ++j)
      accumulate(acc, exp2f(__shfl_sync(0xffffffffu, my_lse, (k + j) & 31) - lse2) * (k + j < c.n_splits), u[j]);
  }
  return acc;
}

// Run first by every combine CTA; false: the CTA has nothing to do. Launched as the decode's programmatic
// dependent (the many-rows combine, kernels.py), CTAs start while the decode still runs, as its SMs free up.
// A CTA whose request is not split leaves at once, in the decode's tail: num_splits is the metadata's, complete
// before the decode began. The others wait for the decode (griddepcontrol.wait) before they read a partial.
// CTA (0, 0, 0) always waits, so the combine grid never completes before the decode: work queued after the
// call sees the rows the decode wrote too.
// Trace builds mark each CTA's start (0), the end of its wait for the decode (2) and its end (1, in the entry points).
__device__ __forceinline__ bool combine_prologue(const DecodeParams& p) {
  FMLA_TRACE_CTA(0);
  const int req = blockIdx.x;
  const bool split = p.num_splits[req + 1] - p.num_splits[req] > 1;
  if (split || (blockIdx.x | blockIdx.y | blockIdx.z) == 0) {
    wait_for_prerequisite_grids();
    FMLA_TRACE_CTA(2);
  }
  return split;
}

// Many rows: one warp per row, all 512 columns (a lane owns 4 float4s, one per quarter) and all of its splits.
// A warp per (row, quarter) made 4x the CTAs, and the merge ran in as many more waves of latency.
template <bool kBF16>
__device__ void combine_rows(const DecodeParams& p) {
  const int flat = blockIdx.y * kCombineRowsPerCta + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (flat >= p.h_kv * p.rows) return;
  const CombineRow c = combine_row_of(p, blockIdx.x, flat);
  if (c.n_splits <= 1) return;
  const int col = 4 * lane;
  float lse2;
  Lane4s<4> acc;
  if (c.n_splits <= 32) {
    acc = merge_up_to_32<4>(p, c, col, lane, lse2);
  } else {
    lse2 = merged_lse2(c, lane);
    acc = lse2 == neg_inf() ? zero_lane<4>() : weighted_sum<4>(p, c, lse2, col, 0, 1);
  }
#pragma unroll
  for (int q = 0; q < 4; ++q) store_row<kBF16>(p, c, lse2, acc.v[q], col + kQuarterCols * q, lane == 0 && q == 0);
}

// Few rows, many splits (b = 1 or 4, long): one CTA per (row, column quarter); warp w takes splits w, w + 8, ...
// and the 8 partial sums meet in shared memory. Up to kWideOneTrip splits, every LSE (kWideLseSlots a lane) and
// every partial of this warp (kWideInFlight float4s a lane) are loaded before any is used: one round trip to
// memory for the whole merge. Loading the LSEs, then again for their sum, then the partials took three.
constexpr int kWideWarps = kCombineThreads / 32, kWideLseSlots = 3, kWideInFlight = 9;
constexpr int kWideOneTrip = kWideWarps * kWideInFlight;       // 72 splits: b = 1, h_q = 128 has 66
static_assert(kWideOneTrip <= 32 * kWideLseSlots, "every split of one trip has its LSE in a lane");

// Both halves of the one-trip merge: this lane's weighted float4 of the row quarter at `col` and the row's log2 LSE.
__device__ __forceinline__ float4 wide_merge_one_trip(const DecodeParams& p, const CombineRow& c, int col, int warp,
                                                      int lane, float& lse2) {
  const float* src = partial0(p, c, col);
  const int64_t split_step = c.stride * kHeadDimV;
  float slot_lse[kWideLseSlots];                                // split lane + 32s of the row
#pragma unroll
  for (int s = 0; s < kWideLseSlots; ++s) {
    const int k = lane + 32 * s;
    slot_lse[s] = k < c.n_splits ? c.lse_k[k * c.stride] : neg_inf();
  }
  float4 v[kWideInFlight];
#pragma unroll
  for (int j = 0; j < kWideInFlight; ++j) {       // split warp + 8j: its LSE is in slot j / 4 of lane 8 (j % 4) + warp
    const int k = warp + kWideWarps * j;
    v[j] = load_lane<1>(src + k * split_step, k < c.n_splits).v[0];
  }
  lse2 = lse2_of_slots(slot_lse);
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  if (lse2 == neg_inf()) return acc;                             // every partial is empty
#pragma unroll
  for (int j = 0; j < kWideInFlight; ++j) {
    const float lk = __shfl_sync(0xffffffffu, slot_lse[j / 4], kWideWarps * (j % 4) + warp);
    accumulate(acc, warp + kWideWarps * j < c.n_splits ? exp2f(lk - lse2) : 0.f, v[j]);
  }
  return acc;
}

template <bool kBF16>
__device__ void combine_wide(const DecodeParams& p) {
  __shared__ float4 partial[kWideWarps][32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  const CombineRow c = combine_row_of(p, blockIdx.x, blockIdx.y);
  if (c.n_splits <= 1) return;                                  // the same for the whole CTA
  const int col = (kHeadDimV / kCombineColumnSplits) * blockIdx.z + 4 * lane;
  float lse2;
  if (c.n_splits <= kWideOneTrip) {
    partial[warp][lane] = wide_merge_one_trip(p, c, col, warp, lane, lse2);
  } else {
    lse2 = merged_lse2(c, lane);
    partial[warp][lane] = lse2 == neg_inf() ? make_float4(0.f, 0.f, 0.f, 0.f)
                                            : weighted_sum<1>(p, c, lse2, col, warp, kWideWarps).v[0];
  }
  __syncthreads();
  if (warp != 0) return;
  float4 acc = partial[0][lane];
#pragma unroll
  for (int w = 1; w < kWideWarps; ++w) {
    const float4 v = partial[w][lane];
    acc.x += v.x; acc.y += v.y; acc.z += v.z; acc.w += v.w;
  }
  store_row<kBF16>(p, c, lse2, acc, col, lane == 0 && blockIdx.z == 0);
}

}  // namespace fmla

// Many rows: grid (b, ceil(h_kv * rows / 8), 1), 256 threads = 8 rows; 3 CTAs per SM (72 registers: a lane holds
// two splits' 8 float4s; at 64 it spilled).
extern "C" __global__ void __launch_bounds__(fmla::kCombineThreads, 3)
    mla_combine_bf16(const __grid_constant__ fmla::DecodeParams p) {
  if (fmla::combine_prologue(p)) fmla::combine_rows<true>(p);
  FMLA_TRACE_CTA(1);
}
extern "C" __global__ void __launch_bounds__(fmla::kCombineThreads, 3)
    mla_combine_fp16(const __grid_constant__ fmla::DecodeParams p) {
  if (fmla::combine_prologue(p)) fmla::combine_rows<false>(p);
  FMLA_TRACE_CTA(1);
}
// Few rows: grid (b, h_kv * rows, 4 column quarters), 256 threads = 8 warps sharing one row's splits.
extern "C" __global__ void __launch_bounds__(fmla::kCombineThreads)
    mla_combine_wide_bf16(const __grid_constant__ fmla::DecodeParams p) {
  if (fmla::combine_prologue(p)) fmla::combine_wide<true>(p);
  FMLA_TRACE_CTA(1);
}
extern "C" __global__ void __launch_bounds__(fmla::kCombineThreads)
    mla_combine_wide_fp16(const __grid_constant__ fmla::DecodeParams p) {
  if (fmla::combine_prologue(p)) fmla::combine_wide<false>(p);
  FMLA_TRACE_CTA(1);
}
