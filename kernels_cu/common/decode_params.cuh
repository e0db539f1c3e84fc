// Arguments of the decode and combine kernels, passed by value (__grid_constant__).
// Layout contract: every field is 8 bytes (the last two floats share one), in this order; flashmla_rt/kernels.py builds the same record
// with a NumPy structured dtype (DECODE_PARAMS_FIELDS). Strides are in elements.
#pragma once
#include "nvrtc_shim.cuh"

namespace fmla {

constexpr int kHeadDimK = 576;   // 512 latent ("NoPE") + 64 RoPE
constexpr int kHeadDimV = 512;   // V = first 512 dims of each K row

struct DecodeParams {
  const void* q;                 // [b, s_q, h_q, 576], 16-bit
  const void* kcache;            // [num_cache_blocks, page, h_kv, 576], 16-bit
  const int* block_table;        // [b, bt_stride...]
  const int* seqlens;            // [b]
  const int* sched_meta;         // [num_parts, 8], see mla_metadata.cu
  const int* num_splits;         // [b + 1]
  void* out;                     // [b, s_q, h_q, 512], 16-bit, contiguous
  float* lse;                    // [b, h_q, s_q], contiguous, natural log
  float* o_accum;                // [splits, h_kv, rows, 512] fp32 normalised partials
  float* lse_accum;              // [splits, h_kv, rows] log2 LSE of each partial (-inf = empty)
  int64_t q_stride_b, q_stride_s, q_stride_h;
  int64_t k_stride_block, k_stride_token, k_stride_head;
  int64_t bt_stride;
  int64_t bt_width;              // columns of block_table: pages past it are never looked up
  int64_t num_cache_blocks;      // block ids outside [0, num_cache_blocks) are never dereferenced
  int64_t page_shift;            // page size = 1 << page_shift
  int64_t batch, s_q, h_q, h_kv;
  int64_t ngroups;               // h_q / h_kv
  int64_t rows;                  // s_q * ngroups packed query rows per KV head
  int64_t causal;                // 0/1 (already 0 when s_q == 1)
  float scale_log2;              // softmax_scale * log2(e) (float: a constant-bank operand in the hot loop)
  float scale_log2_pad;
};

// Where the final results of (request, query token s, head) go: the first of its 512 outputs (16-bit elements of
// `out`), and its LSE slot.
__device__ __forceinline__ int64_t out_row_offset(const DecodeParams& p, int req, int s, int head) {
  return (((int64_t)req * p.s_q + s) * p.h_q + head) * kHeadDimV;
}
__device__ __forceinline__ int64_t lse_index(const DecodeParams& p, int req, int s, int head) {
  return ((int64_t)req * p.h_q + head) * p.s_q + s;
}

// Host/device contract, checked when the host passes its own numbers (tests/test_contract.py does).
#ifdef FMLA_EXPECT_PARAMS_BYTES
static_assert(sizeof(DecodeParams) == FMLA_EXPECT_PARAMS_BYTES, "DecodeParams size differs from DECODE_PARAMS_DTYPE");
// scale_log2 and its pad are the record's last 8 bytes (offsetof is not a constant expression under NVRTC 13.0).
static_assert(sizeof(DecodeParams) - 2 * sizeof(float) == FMLA_EXPECT_SCALE_OFFSET,
              "DecodeParams.scale_log2 offset differs from DECODE_PARAMS_DTYPE");
#endif

}  // namespace fmla
