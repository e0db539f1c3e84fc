// Merging split-KV partials of one (request, KV head, packed row): the combine kernel's rows (mla_combine.cu) and the
// decode's in-kernel merge (decode_tile.cuh: the last split chunk of a request merges it).
//   lse = log2 sum_k 2^lse_k,  O = sum_k 2^(lse_k - lse) O_k   (partials are already normalised).
// A warp merges a row: a lane owns kQ float4s of the 512 columns. The merge is latency-bound, so loads are issued in
// batches of kSplitsInFlight float4s per lane. Partials are read through L2 (ld.global.cg): in the decode they were
// written moments ago by other SMs, whose lines this SM's L1 must not serve stale.
#pragma once
#include "nvrtc_shim.cuh"
#include "softmax.cuh"
#include "decode_params.cuh"

namespace fmla {

constexpr int kSplitsInFlight = 8;            // float4 loads per lane issued before any is used
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
  for (int k = lane; k < c.n_splits; k += 32) mx = fmaxf(mx, __ldcg(c.lse_k + k * c.stride));
  mx = warp_max(mx);
  float sum = 0.f;
  if (mx != neg_inf())
    for (int k = lane; k < c.n_splits; k += 32) sum += exp2f(__ldcg(c.lse_k + k * c.stride) - mx);
  sum = warp_sum(sum);
  return row_lse2(mx, sum);
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
    x.v[q] = real ? __ldcg(reinterpret_cast<const float4*>(src + kQuarterCols * q)) : make_float4(0.f, 0.f, 0.f, 0.f);
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
// of the loop issues the loads of kSplitsInFlight / kQ splits (predicated past the last split) before
// using any.
template <int kQ>
__device__ __forceinline__ Lane4s<kQ> weighted_sum(const DecodeParams& p, const CombineRow& c, float lse2, int col,
                                                   int k0, int step) {
  constexpr int kF = kSplitsInFlight / kQ;
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
      w[j] = real ? exp2f(__ldcg(c.lse_k + kj * c.stride) - lse2) : 0.f;
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

// Up to 32 splits (lane k holds split k's LSE): the LSEs and the first kSplitsInFlight / kQ splits'
// partials are loaded together, since the partials do not depend on them, so a row with that many splits costs
// one round trip to memory.
template <int kQ>
__device__ __forceinline__ Lane4s<kQ> merge_up_to_32(const DecodeParams& p, const CombineRow& c, int col, int lane,
                                                     float& lse2) {
  constexpr int kF = kSplitsInFlight / kQ;
  const int64_t split_step = c.stride * kHeadDimV;
  const float* src = partial0(p, c, col);
  const float my_lse = lane < c.n_splits ? __ldcg(c.lse_k + lane * c.stride) : neg_inf();
  Lane4s<kQ> v[kF];
#pragma unroll
  for (int j = 0; j < kF; ++j) v[j] = load_lane<kQ>(src + j * split_step, j < c.n_splits);
  float mx = my_lse;
  mx = warp_max(mx);
  float sum = (mx != neg_inf()) ? exp2f(my_lse - mx) : 0.f;  // exp2(-inf) = 0 for lanes past the last split
  sum = warp_sum(sum);
  lse2 = row_lse2(mx, sum);
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

// Merge row `flat` (= hk * rows + r) of request `req` into out/lse with the 32 lanes of a warp (all 512 columns).
template <bool kBF16>
__device__ __forceinline__ void merge_split_row(const DecodeParams& p, int req, int flat, int lane) {
  const CombineRow c = combine_row_of(p, req, flat);
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

}  // namespace fmla
