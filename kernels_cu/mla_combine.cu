// Merge split-KV partials (common/split_merge.cuh) for each (request, KV head, packed row) with more than one split,
// where the decode did not merge them itself (the narrow kernel, and few rows with many splits).
// Many rows (mla_combine_*): one warp per row, grid (b, rows / 8, 1), a lane owns four float4s (one per quarter of
// the 512 columns). Few rows (mla_combine_wide_*, kernels.py picks it): that would leave most SMs idle, so one CTA
// per (row, quarter) and its 8 warps share the splits. With up to 32 splits the LSEs and the first 2 (many rows)
// or 8 (few rows) splits' partials go out together (a row with that many splits costs one round trip), and each
// later step issues the next batch (predicated past the last split) before using any. Rows of unsplit
// requests were written by the decode kernel and are skipped. All partials empty -> out 0, lse +inf (FlashMLA's
// convention).
#include "common/nvrtc_shim.cuh"
#include "common/ptx_grid.cuh"
#include "common/softmax.cuh"
#include "common/decode_params.cuh"
#include "common/split_merge.cuh"

namespace fmla {

// kernels.COMBINE_THREADS and COMBINE_ROWS_PER_CTA (one warp per row). An enum, so nothing lands in the module.
enum : int { kCombineThreads = 256, kCombineRowsPerCta = kCombineThreads / 32, kCombineColumnSplits = 4 };
#ifdef FMLA_EXPECT_COMBINE_THREADS
static_assert(kCombineThreads == FMLA_EXPECT_COMBINE_THREADS, "kernels.COMBINE_THREADS differs");
static_assert(kCombineRowsPerCta == FMLA_EXPECT_COMBINE_ROWS, "kernels.COMBINE_ROWS_PER_CTA differs");
static_assert(kCombineColumnSplits == FMLA_EXPECT_COMBINE_COLUMN_SPLITS, "kernels.COMBINE_COLUMN_SPLITS differs");
#endif

// Run first by every combine CTA; false: the CTA has nothing to do. Launched as the decode's programmatic
// dependent (the many-rows combine, kernels.py), CTAs start while the decode still runs, as its SMs free up.
// A CTA whose request is not split leaves at once, in the decode's tail: num_splits is the metadata's, complete
// before the decode began. The others wait for the decode (griddepcontrol.wait) before they read a partial.
// CTA (0, 0, 0) always waits, so the combine grid never completes before the decode: work queued after the
// call sees the rows the decode wrote too.
__device__ __forceinline__ bool combine_prologue(const DecodeParams& p) {
  const int req = blockIdx.x;
  const bool split = p.num_splits[req + 1] - p.num_splits[req] > 1;
  if (split || (blockIdx.x | blockIdx.y | blockIdx.z) == 0) wait_for_prerequisite_grids();
  return split;
}

// Many rows: one warp per row, all 512 columns (a lane owns 4 float4s, one per quarter) and all of its splits.
// A warp per (row, quarter) made 4x the CTAs, and the merge ran in as many more waves of latency.
template <bool kBF16>
__device__ void combine_rows(const DecodeParams& p) {
  const int flat = blockIdx.y * kCombineRowsPerCta + threadIdx.x / 32, lane = threadIdx.x & 31;
  if (flat >= p.h_kv * p.rows) return;
  if (p.num_splits[blockIdx.x + 1] - p.num_splits[blockIdx.x] <= 1) return;
  merge_split_row<kBF16>(p, blockIdx.x, flat, lane);
}

// Few rows, many splits (b = 1 or 4, long): one CTA per (row, column quarter); warp w takes splits w, w + 8, ...
// and the 8 partial sums meet in shared memory.
template <bool kBF16>
__device__ void combine_wide(const DecodeParams& p) {
  __shared__ float4 partial[kCombineThreads / 32][32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  const CombineRow c = combine_row_of(p, blockIdx.x, blockIdx.y);
  if (c.n_splits <= 1) return;                                  // the same for the whole CTA
  const float lse2 = merged_lse2(c, lane);
  const int col = (kHeadDimV / kCombineColumnSplits) * blockIdx.z + 4 * lane;
  partial[warp][lane] = lse2 == neg_inf() ? make_float4(0.f, 0.f, 0.f, 0.f)
                                          : weighted_sum<1>(p, c, lse2, col, warp, kCombineThreads / 32).v[0];
  __syncthreads();
  if (warp != 0) return;
  float4 acc = partial[0][lane];
#pragma unroll
  for (int w = 1; w < kCombineThreads / 32; ++w) {
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
}
extern "C" __global__ void __launch_bounds__(fmla::kCombineThreads, 3)
    mla_combine_fp16(const __grid_constant__ fmla::DecodeParams p) {
  if (fmla::combine_prologue(p)) fmla::combine_rows<false>(p);
}
// Few rows: grid (b, h_kv * rows, 4 column quarters), 256 threads = 8 warps sharing one row's splits.
extern "C" __global__ void __launch_bounds__(fmla::kCombineThreads)
    mla_combine_wide_bf16(const __grid_constant__ fmla::DecodeParams p) {
  if (fmla::combine_prologue(p)) fmla::combine_wide<true>(p);
}
extern "C" __global__ void __launch_bounds__(fmla::kCombineThreads)
    mla_combine_wide_fp16(const __grid_constant__ fmla::DecodeParams p) {
  if (fmla::combine_prologue(p)) fmla::combine_wide<false>(p);
}
