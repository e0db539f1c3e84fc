// MLA decode attention for Hopper (sm_90a): paged KV, split-KV, causal, bf16/fp16.
//
// One CTA = 64 packed query rows (row r = s * ngroups + g of one KV head) x the KV-block ranges that the
// split-KV schedule (mla_metadata.cu) assigned to its part (blockIdx.z). Math per 64-token block:
//   S = Q K^T (64x64, K-dim 576)  ->  online softmax in the exp2 domain  ->  O += P V (64x512, V = K[:, :512]).
// Threads: 256 = 2 warpgroups (WG). WG w computes S for tokens [32w, 32w+32) of the block, the two WGs
// exchange row maxima, each writes its half of P to shared memory, then WG w accumulates O[:, 256w:256w+256]
// with P (64x64) against its half of V. Both S and P V are wgmma with operands in 128-B-swizzled smem.
// Loads: cp.async 16-B chunks gathered token by token through the block table (any power-of-two page size),
// double-buffered (a stage is refilled as soon as its block is consumed, so two blocks are in flight while
// the CTA waits); rows past a request's length, or with a block id outside the cache, are zero-filled and
// never read, so NaN tails and garbage block ids cannot leak or fault.
// Output: a request with one chunk is written to out/lse directly; otherwise each chunk writes a normalised
// fp32 partial (and its log2 LSE) to the split workspace, merged by mla_combine.cu.
#include "common/nvrtc_shim.cuh"
#include "common/ptx_async.cuh"
#include "common/ptx_wgmma.cuh"
#include "common/softmax.cuh"
#include "common/decode_params.cuh"

namespace fmla {

constexpr int kBlockM = 64;                         // query rows per CTA
constexpr int kBlockN = 64;                         // KV tokens per block
constexpr int kThreads = 256;
constexpr int kTileBytes = 64 * 128;                // 64 rows x 64 16-bit values (128 B): one swizzle tile
constexpr int kKTiles = kHeadDimK / 64;             // 9 column tiles per 576-wide row
constexpr int kRowTileBytes = kKTiles * kTileBytes; // 73,728 B: 64 rows x 576

// Shared-memory plan (offsets from a 1024-B aligned base: the 128-B swizzle repeats every 1024 B).
constexpr int kOffQ = 0;                                  // [9 tiles][64 rows][128 B] Q
constexpr int kOffKV = kOffQ + kRowTileBytes;             // 2 stages of [9][64][128 B] K (V = tiles 0..7)
constexpr int kOffP = kOffKV + 2 * kRowTileBytes;         // [64 rows][64 tokens] P, one swizzle tile
constexpr int kOffRowMax = kOffP + kTileBytes;            // float [2 WG][64 rows]
constexpr int kOffRowSum = kOffRowMax + 2 * kBlockM * 4;  // float [2 WG][64 rows]
constexpr int kSmemUsed = kOffRowSum + 2 * kBlockM * 4;
constexpr int kSmemBytes = kSmemUsed + 1024;              // + slack to align the dynamic base to 1024 B
static_assert(kSmemBytes <= 232448, "exceeds the 227 KB opt-in shared memory of sm_90");

// Each of the 4 threads of a row copies chunks {sub, sub+4} of each of the 9 column tiles (18 x 16 B), so one
// instruction of a warp moves 8 rows x 64 contiguous bytes (whole 32-B sectors). The swizzled destination
// depends only on (row, sub), so per tile it is a constant offset from two bases.
// src == nullptr zero-fills the row (cp.async with 0 source bytes reads nothing).
__device__ __forceinline__ void load_row_async(uint32_t buf, int row, int sub, const uint8_t* src,
                                               const void* any_valid_ptr) {
  const uint32_t n = src ? 16u : 0u;
  const uint8_t* s = src ? src + 16 * sub : (const uint8_t*)any_valid_ptr;
  const int64_t step = src ? 1 : 0;
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const uint32_t dst = buf + row * 128 + (((sub + 4 * e) ^ (row & 7)) << 4);
#pragma unroll
    for (int t = 0; t < kKTiles; ++t) cp_async_16(dst + t * kTileBytes, s + step * (t * 128 + e * 64), n);
  }
}

struct RowState {          // one accumulator row of this thread (rows lo and hi of the wgmma fragment)
  int packed_row;          // r within [0, rows); >= rows means padding
  int key_limit;           // keys [0, key_limit) are attendable (causal bottom-right)
  float max2;              // running max, log2 units (scores * scale * log2e)
  float sum;               // this thread's partial row sum (its 8 columns); quad/WG-reduced at the end
};

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

// Softmax step for one block on this thread's 16 scores (rows lo/hi x 8 columns): mask, exchange row maxima
// between the two WGs, rescale factors, P = exp2(S*c - max), and write P (16-bit) to its smem tile.
template <bool kBF16>
__device__ __forceinline__ void softmax_block(float (&s)[16], RowState (&rs)[2], float (&rescale)[2], int tok0,
                                              float scale_log2, float* s_rowmax, uint32_t sP, int wg, int lane,
                                              int row_lo) {
  float mx[2] = {neg_inf(), neg_inf()};
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int v = 0; v < 4; ++v) {
      const int h = v >> 1, tok = tok0 + 8 * j + (v & 1);
      float& x = s[4 * j + v];
      x = (tok < rs[h].key_limit) ? x : neg_inf();      // select, never arithmetic: NaN-safe
      mx[h] = fmaxf(mx[h], x);
    }
#pragma unroll
  for (int h = 0; h < 2; ++h) mx[h] = quad_max(mx[h]);
  if ((lane & 3) == 0) {
    s_rowmax[wg * kBlockM + row_lo] = mx[0];
    s_rowmax[wg * kBlockM + row_lo + 8] = mx[1];
  }
  named_barrier_sync(NamedBarrier::kRowMaxReady, kThreads);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float other = s_rowmax[(wg ^ 1) * kBlockM + row_lo + 8 * h];
    const float new_max = fmaxf(rs[h].max2, fmaxf(mx[h], other) * scale_log2);
    rescale[h] = exp2_approx(rs[h].max2 - new_max);
    rs[h].max2 = new_max;
    rs[h].sum *= rescale[h];
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) {
#pragma unroll
    for (int v = 0; v < 4; ++v) {
      const int h = v >> 1;
      s[4 * j + v] = exp2_approx(fmaf(s[4 * j + v], scale_log2, -rs[h].max2));
      rs[h].sum += s[4 * j + v];
    }
    // P tile is K-major SW128: token chunk (4*wg + j) of rows lo and lo+8 (same row & 7).
    const uint32_t off = (((4 * wg + j) ^ (row_lo & 7)) << 4) + 4 * (lane & 3);
    const uint32_t lo = pack2<kBF16>(s[4 * j + 0], s[4 * j + 1]), hi = pack2<kBF16>(s[4 * j + 2], s[4 * j + 3]);
    asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(sP + row_lo * 128 + off), "r"(lo) : "memory");
    asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(sP + (row_lo + 8) * 128 + off), "r"(hi) : "memory");
  }
}

template <bool kBF16>
__device__ void decode_cta(const DecodeParams& p) {
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  const uint32_t raw = smem_u32(smem_raw), base = (raw + 1023u) & ~1023u;
  uint8_t* smem = smem_raw + (base - raw);
  float* s_rowmax = reinterpret_cast<float*>(smem + kOffRowMax);
  float* s_rowsum = reinterpret_cast<float*>(smem + kOffRowSum);
  const uint32_t sQ = base + kOffQ, sKV = base + kOffKV, sP = base + kOffP;

  const int tid = threadIdx.x, wg = tid / 128, lane = tid & 31, warp_in_wg = (tid & 127) / 32;
  const int load_row = tid / 4, load_sub = tid % 4;            // loader role: 4 threads per smem row
  const int row_lo = 16 * warp_in_wg + lane / 4;               // accumulator rows row_lo, row_lo + 8
  const int m_block = blockIdx.x, hk = blockIdx.y;
  const int* meta = p.sched_meta + blockIdx.z * 8;
  const int begin_req = __ldg(meta + 0), begin_blk = __ldg(meta + 1), end_req = __ldg(meta + 2),
            end_blk = __ldg(meta + 3), begin_split = __ldg(meta + 4);
  const int rows = (int)p.rows, ngroups = (int)p.ngroups, s_q = (int)p.s_q;
  const float scale_log2 = (float)p.scale_log2;
  const uint8_t* kcache = static_cast<const uint8_t*>(p.kcache);
  const uint8_t* q = static_cast<const uint8_t*>(p.q);
  const int page_mask = (1 << p.page_shift) - 1;

  for (int req = begin_req; req <= end_req; ++req) {
    const int seqlen = __ldg(p.seqlens + req);
    const int n_blocks_req = (seqlen + kBlockN - 1) / kBlockN;
    const int first = (req == begin_req) ? begin_blk : 0;
    int last = (req == end_req) ? end_blk : n_blocks_req;
    const int split0 = __ldg(p.num_splits + req);
    const bool is_split = __ldg(p.num_splits + req + 1) - split0 > 1;
    const int split_idx = split0 + ((req == begin_req) ? begin_split : 0);

    auto key_limit = [&](int r) {          // attendable keys of packed row r (bottom-right causal)
      if (!p.causal || r >= rows) return seqlen;
      return seqlen - (s_q - 1 - r / ngroups);
    };
    RowState rs[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      rs[h].packed_row = m_block * kBlockM + row_lo + 8 * h;
      rs[h].key_limit = key_limit(rs[h].packed_row);
      rs[h].max2 = kMaxInit;
      rs[h].sum = 0.f;
    }
    // Causal: no row of this tile attends past the last valid row's limit; skip those blocks entirely.
    const int tile_limit = key_limit(min(rows, (m_block + 1) * kBlockM) - 1);
    last = min(last, (max(tile_limit, 0) + kBlockN - 1) / kBlockN);
    const int n_blocks = last - first;

    float o[128];
#pragma unroll
    for (int i = 0; i < 128; ++i) o[i] = 0.f;

    if (n_blocks > 0) {
      // ---- prologue: Q tile and the first KV block
      {
        const int r = m_block * kBlockM + load_row;
        const uint8_t* src = nullptr;
        if (r < rows) {
          const int s = r / ngroups, h = hk * ngroups + r % ngroups;
          src = q + 2 * (req * p.q_stride_b + s * p.q_stride_s + h * p.q_stride_h);
        }
        load_row_async(sQ, load_row, load_sub, src, q);
      }
      auto load_kv_block = [&](int blk, int stage) {
        const int tok = blk * kBlockN + load_row;
        const uint8_t* src = nullptr;
        if (tok < seqlen && (tok >> p.page_shift) < p.bt_width) {
          const int id = __ldg(p.block_table + req * p.bt_stride + (tok >> p.page_shift));
          if (id >= 0 && id < p.num_cache_blocks)
            src = kcache + 2 * (id * p.k_stride_block + (tok & page_mask) * p.k_stride_token + hk * p.k_stride_head);
        }
        load_row_async(sKV + stage * kRowTileBytes, load_row, load_sub, src, kcache);
      };
      // Copy groups: G0 = Q + block 0, G1 = block 1, and each iteration i commits G(i+2) = block i+2 into the
      // stage it just finished with (possibly empty), so both stages stay in flight while we wait.
      load_kv_block(first, 0);
      cp_async_commit();
      if (n_blocks > 1) load_kv_block(first + 1, 1);
      cp_async_commit();

      // ---- main loop over this chunk's KV blocks
      for (int i = 0; i < n_blocks; ++i) {
        const int blk = first + i, stage = i & 1;
        cp_async_wait<1>();                 // every group but the newest (block i+1) has landed: block i is in
        fence_proxy_async_smem();
        __syncthreads();

        const uint32_t sK = sKV + stage * kRowTileBytes;
        float s[16];
        // Descriptors advance by (byte offset >> 4) in their low bits; adding immediates keeps them out of
        // 72 live registers.
        const uint64_t desc_q = desc_k_major(sQ), desc_k = desc_k_major(sK + wg * 32 * 128);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < kHeadDimK / 16; ++kk) {
          const uint32_t off = ((kk / 4) * kTileBytes + (kk % 4) * 32) >> 4;
          wgmma_m64n32k16_ss<kBF16>(s, desc_q + off, desc_k + off, kk > 0);
        }
        wgmma_commit();
        wgmma_wait<0>();
        fence_accumulators(s);

        float rescale[2];
        softmax_block<kBF16>(s, rs, rescale, blk * kBlockN + wg * 32 + 2 * (lane & 3), scale_log2, s_rowmax, sP,
                             wg, lane, row_lo);
#pragma unroll
        for (int j = 0; j < 32; ++j) {
          o[4 * j + 0] *= rescale[0]; o[4 * j + 1] *= rescale[0];
          o[4 * j + 2] *= rescale[1]; o[4 * j + 3] *= rescale[1];
        }
        fence_proxy_async_smem();
        named_barrier_sync(NamedBarrier::kProbsReady, kThreads);

        // V half of this WG: columns [256wg, 256wg+256) = K tiles 4wg..4wg+3; k-step = 16 tokens = 2048 B.
        const uint64_t desc_p = desc_k_major(sP), desc_v = desc_mn_major(sK + wg * 4 * kTileBytes, kTileBytes);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk)
          wgmma_m64n256k16_ss_tb<kBF16>(o, desc_p + ((kk * 32) >> 4), desc_v + ((kk * 2048) >> 4), 1);
        wgmma_commit();
        wgmma_wait<0>();
        fence_accumulators(o);
        __syncthreads();                      // stage and sP are free again
        if (i + 2 < n_blocks) load_kv_block(blk + 2, stage);
        cp_async_commit();
      }
    }

    // ---- epilogue: full row sums, normalise, store
#pragma unroll
    for (int h = 0; h < 2; ++h) rs[h].sum = quad_sum(rs[h].sum);
    if ((lane & 3) == 0) {
      s_rowsum[wg * kBlockM + row_lo] = rs[0].sum;
      s_rowsum[wg * kBlockM + row_lo + 8] = rs[1].sum;
    }
    named_barrier_sync(NamedBarrier::kRowSumReady, kThreads);
    float inv[2], lse2[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float total = rs[h].sum + s_rowsum[(wg ^ 1) * kBlockM + row_lo + 8 * h];
      inv[h] = (total > 0.f) ? 1.f / total : 0.f;     // empty (or NaN) row -> output 0
      lse2[h] = row_lse2(rs[h].max2, total);
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = rs[h].packed_row;
      if (r >= rows) continue;
      const int s = r / ngroups, head = hk * ngroups + r % ngroups;
      const int col0 = 256 * wg + 2 * (lane & 3);
      if (!is_split) {
        uint32_t* dst = reinterpret_cast<uint32_t*>(static_cast<uint8_t*>(p.out) +
                                                    2 * (((int64_t)req * s_q + s) * p.h_q + head) * kHeadDimV);
#pragma unroll
        for (int j = 0; j < 32; ++j)
          dst[(col0 + 8 * j) / 2] = pack2<kBF16>(o[4 * j + 2 * h] * inv[h], o[4 * j + 2 * h + 1] * inv[h]);
        if (wg == 0 && (lane & 3) == 0)
          p.lse[((int64_t)req * p.h_q + head) * s_q + s] = (lse2[h] == neg_inf()) ? pos_inf() : lse2[h] * 0.69314718056f;
      } else {
        const int64_t acc_row = ((int64_t)split_idx * p.h_kv + hk) * rows + r;
        float2* dst = reinterpret_cast<float2*>(p.o_accum + acc_row * kHeadDimV);
#pragma unroll
        for (int j = 0; j < 32; ++j)
          dst[(col0 + 8 * j) / 2] = make_float2(o[4 * j + 2 * h] * inv[h], o[4 * j + 2 * h + 1] * inv[h]);
        if (wg == 0 && (lane & 3) == 0) p.lse_accum[acc_row] = lse2[h];
      }
    }
    __syncthreads();                          // smem (Q, row sums) is reused by the next request
  }
}

}  // namespace fmla

extern "C" __global__ void __launch_bounds__(fmla::kThreads, 1) mla_decode_bf16(const __grid_constant__ fmla::DecodeParams p) {
  fmla::decode_cta<true>(p);
}
extern "C" __global__ void __launch_bounds__(fmla::kThreads, 1) mla_decode_fp16(const __grid_constant__ fmla::DecodeParams p) {
  fmla::decode_cta<false>(p);
}
