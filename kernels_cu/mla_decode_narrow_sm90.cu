// MLA decode for sm_90a when a KV head has few query rows (rows = s_q * h_q / h_kv <= 32): the "narrow" kernel.
//
// The seesaw kernel computes S = Q·Kᵀ with 64 query rows per wgmma (M is fixed at 64), so with 16 rows three
// quarters of its tensor work is padding, and two warpgroups must exchange row maxima every block. Here the
// products are transposed so the query rows are the wgmma's N (16 or 32):
//   Sᵀ[64 tok x N] = K[64 x 576] · Qᵀ          (A = K tile, K-major; B = Q, K-major)
//   Oᵀ[512 x N]   += Vᵀ[512 x 64] · Pᵀ[64 x N]   (A = V tile read MN-major; B = P, K-major, in shared memory)
// so tensor work and registers scale with the real row count (Oᵀ is 4N floats per thread).
// One consumer warpgroup does all the math of a block; a fifth warp is the producer. KV is loaded a whole block
// per TMA (one per page when page < 64) through a 5-D tensor map that walks each token row in order (row
// elements, 8 tokens, 9 column tiles, 8-token groups, page): DRAM sees whole 1,152-B rows, and a block costs one
// TMA issue instead of nine. Shared memory then holds a block as [token group][tile][8 tokens][128 B], which
// wgmma reads with a 9,216-B stride between 8-row groups. Two stages, each with a "full" mbarrier (TMA bytes)
// and an "empty" one (one arrival per consumer warp after its P·V). The column (query row) maxima of a block are
// reduced across the four warps through shared memory; row sums stay per thread until the chunk ends. Rows of
// the sequence's last page past its end are zeroed in V before P·V (TMA loads them and they may hold NaN);
// pages past the end and invalid block ids are zero-filled by TMA.
#include "common/nvrtc_shim.cuh"
#include "common/trace_cta.cuh"
#include "common/ptx_async.cuh"
#include "common/ptx_grid.cuh"
#include "common/ptx_tma.cuh"
#include "common/ptx_wgmma.cuh"
#include "common/softmax.cuh"
#include "common/decode_params.cuh"
#include "common/decode_tile.cuh"
#include "common/kv_tma.cuh"

namespace fmla {
namespace narrow {

constexpr int kConsumerThreads = 128;
constexpr int kThreadsNarrow = kConsumerThreads + 32;    // + one producer warp
constexpr int kVTiles = 8;                               // V = K columns 0..511 = tiles 0..7
constexpr int kGroupBytes = kKTiles * 1024;              // one 8-token group: 9 tiles x 8 rows x 128 B

// Byte offset of (token row r, column tile t) in a stage: [r / 8][t][r % 8][128 B].
__device__ __forceinline__ constexpr uint32_t row_offset(int r, int t) {
  return (r >> 3) * kGroupBytes + t * 1024 + (r & 7) * 128;
}

template <int N>
struct Plan {                                            // shared-memory offsets from a 1024-B aligned base
  static constexpr int kQTile = N * 128;                 // one 64-column tile of Q: N rows x 128 B
  static constexpr int kOffQ = 0;                        // [9][N][128 B]
  static constexpr int kOffP = kKTiles * kQTile;         // [N][128 B]: P of the current block, K-major SW128
  static constexpr int kOffStage0 = kOffP + N * 128;     // [8 groups][9 tiles][8][128 B]: one block
  static constexpr int kOffStage1 = kOffStage0 + kRowTileBytes;
  static constexpr int kOffRed = kOffStage1 + kRowTileBytes;   // float [4 warps][N]: column maxima, then sums
  static constexpr int kOffFull = kOffRed + 4 * N * 4;   // uint64 [2 stages]
  static constexpr int kOffEmpty = kOffFull + 2 * 8;     // uint64 [2 stages]
  static constexpr int kSmemUsed = kOffEmpty + 2 * 8;
  static constexpr int kSmemBytes = kSmemUsed + 1024;
  static_assert(kOffP % 1024 == 0 && kOffStage0 % 1024 == 0, "swizzled tiles need 1024-B alignment");
  static_assert(kSmemBytes <= 232448, "exceeds the 227 KB opt-in shared memory of sm_90");
};
#ifdef FMLA_EXPECT_NARROW16_SMEM_BYTES
static_assert(Plan<16>::kSmemBytes == FMLA_EXPECT_NARROW16_SMEM_BYTES, "kernels.NARROW16 smem differs from Plan<16>");
static_assert(Plan<32>::kSmemBytes == FMLA_EXPECT_NARROW32_SMEM_BYTES, "kernels.NARROW32 smem differs from Plan<32>");
static_assert(kThreadsNarrow == FMLA_EXPECT_NARROW_THREADS, "kernels.NARROW threads differ from kThreadsNarrow");
#endif

enum : int { kBarMax = 1, kBarP = 2, kBarSum = 3, kBarChunk = 4 };   // named barriers of the 128 consumers

__device__ __forceinline__ void consumer_sync(int id) { named_barrier_sync_id(id, kConsumerThreads); }

// TMA loads of 64-token block `blk` into `stage`: one box per min(page, 64) tokens, all on mbarrier `full`.
// Evict-first in L2: the KV is read once (rows 0/1/13/25 of the bench -1 to -7 % in three calls).
// Map coordinates: (head offset in the row, token in group, tile, group in page, page id).
__device__ __forceinline__ void issue_block(const TmaDesc* map, const DecodeParams& p, const Chunk& c, int hk,
                                            int blk, uint32_t stage, uint32_t full) {
  int ids[4], id[4];
  block_page_ids(p, c, blk, ids);
  sanitize_page_ids(p, ids, id);
  const BoxGeometry bg = box_geometry(p, blk);
  const int box_rows = bg.box_rows, boxes = bg.boxes, group0 = bg.group0;
  mbarrier_arrive_expect_tx(full, kRowTileBytes);        // boxes sum to one block, zero-filled or not
#pragma unroll
  for (int bx = 0; bx < 4; ++bx)
    if (bx < boxes)
      tma_load_5d(stage + bx * (box_rows / 8) * kGroupBytes, map, hk * (int)p.k_stride_head, 0, 0, group0, id[bx],
                  full, true);
}

// ---- producer warp (lane 0): every block of every chunk of this CTA, in the consumers' order
template <int N>
__device__ __forceinline__ void produce(const TmaDesc* map, const DecodeParams& p, const int* meta, int hk,
                                        uint32_t stage0, uint32_t full0, uint32_t empty0) {
  const int begin_pos = __ldg(meta + 0), begin_blk = __ldg(meta + 1), end_pos = __ldg(meta + 2),
            end_blk = __ldg(meta + 3), begin_split = __ldg(meta + 4);
  const bool reordered = __ldg(meta + 5) != 0;
  uint32_t g = 0;                                        // blocks issued in this CTA's lifetime
  for (int pos = begin_pos; pos <= end_pos; ++pos) {
    const Chunk c = chunk_of(p, pos, begin_pos, begin_blk, end_pos, end_blk, begin_split, 0, reordered);
    for (int blk = c.first; blk < c.last; ++blk, ++g) {
      const uint32_t s = g & 1;
      if (g >= 2) mbarrier_wait(empty0 + 8 * s, ((g >> 1) - 1) & 1);
      issue_block(map, p, c, hk, blk, stage0 + s * kRowTileBytes, full0 + 8 * s);
    }
  }
}

// ---- consumer warpgroup. Accumulator fragment of m64nNk16 (ptx_wgmma.cuh): thread (warp w, lane l) holds
// d[4j + v] at row (token / V dim) 16w + l/4 + 8(v/2) and column (query row) 8j + 2(l%4) + (v%2). Its N/4
// columns are numbered ci = 2j + (v%2).
template <int N>
struct Columns {
  int key_limit[N / 4];                                  // keys [0, key_limit) attendable (causal bottom-right)
  float max2[N / 4];                                     // running max, log2 units
  float sum[N / 4];                                      // this thread's partial sum (its 2 tokens per block)
};

__device__ __forceinline__ int column_of(int ci, int lane) { return 8 * (ci >> 1) + 2 * (lane & 3) + (ci & 1); }

// Reduce over the 8 lanes of a warp that hold the same columns (lanes sharing l%4).
template <typename Op>
__device__ __forceinline__ float column_reduce(float x, Op op) {
#pragma unroll
  for (int o = 4; o < 32; o <<= 1) x = op(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

// Sᵀ = K · Qᵀ for the block in `stage` (K tile t: K-major, 8-row groups kGroupBytes apart).
template <int N, bool kBF16>
__device__ __forceinline__ void qk_block(float (&s)[N / 2], uint32_t sQ, uint32_t stage) {
  wgmma_fence();
#pragma unroll
  for (int t = 0; t < kKTiles; ++t) {
    const uint64_t dk = smem_desc_sw128(stage + t * 1024, 16, kGroupBytes), dq = desc_k_major(sQ + t * Plan<N>::kQTile);
#pragma unroll
    for (int k = 0; k < 4; ++k) wgmma_narrow_ss<N, kBF16, 0>(s, dk + ((k * 32) >> 4), dq + ((k * 32) >> 4), (t | k) != 0);
  }
  wgmma_commit();
  wgmma_wait<0>();
  fence_accumulators(s);
}

// Column maxima of the block across the warpgroup: lanes sharing l%4 within a warp, then the 4 warps
// through shared memory. Returns the block maximum (raw scores) of each of this thread's columns.
template <int N>
__device__ __forceinline__ void block_column_max(float (&mx)[N / 4], float* red, int warp, int lane) {
#pragma unroll
  for (int ci = 0; ci < N / 4; ++ci) {
    mx[ci] = column_reduce(mx[ci], [](float a, float b) { return fmaxf(a, b); });
    if (lane < 4) red[warp * N + column_of(ci, lane)] = mx[ci];
  }
  consumer_sync(kBarMax);
#pragma unroll
  for (int ci = 0; ci < N / 4; ++ci) {
    const int col = column_of(ci, lane);
    mx[ci] = fmaxf(fmaxf(red[col], red[N + col]), fmaxf(red[2 * N + col], red[3 * N + col]));
  }
}

// Mask, online softmax over the block (r = rescale of the old max, applied to the partial sums), P = exp2(S c -
// max) stored as 16-bit into the K-major P tile: element (column n, token k) at n*128 + ((k/8) ^ (n%8))*16 + 2(k%8).
template <int N, bool kBF16>
__device__ __forceinline__ void softmax_block(float (&s)[N / 2], Columns<N>& cs, float (&r)[N / 4], float* red,
                                              uint32_t sP, int tok0, int warp, int lane, float scale_log2) {
  float mx[N / 4];
#pragma unroll
  for (int ci = 0; ci < N / 4; ++ci) mx[ci] = neg_inf();
#pragma unroll
  for (int i = 0; i < N / 2; ++i) {
    const int ci = 2 * (i >> 2) + (i & 1), tok = tok0 + 8 * ((i >> 1) & 1);
    s[i] = (tok < cs.key_limit[ci]) ? s[i] : neg_inf();  // select, never arithmetic: NaN-safe
    mx[ci] = fmaxf(mx[ci], s[i]);
  }
  block_column_max<N>(mx, red, warp, lane);
#pragma unroll
  for (int ci = 0; ci < N / 4; ++ci) {
    const float new_max = fmaxf(cs.max2[ci], mx[ci] * scale_log2);
    r[ci] = exp2_approx(cs.max2[ci] - new_max);
    cs.max2[ci] = new_max;
    cs.sum[ci] *= r[ci];
  }
  const int row_in_block = tok0 & (kBlockN - 1);
#pragma unroll
  for (int i = 0; i < N / 2; ++i) {
    const int ci = 2 * (i >> 2) + (i & 1), k = row_in_block + 8 * ((i >> 1) & 1), n = column_of(ci, lane);
    const float pv = exp2_approx(fmaf(s[i], scale_log2, -cs.max2[ci]));
    cs.sum[ci] += pv;
    const uint32_t bits = pack2<kBF16>(pv, 0.f) & 0xffffu;
    const uint32_t addr = sP + n * 128 + ((((k >> 3) ^ (n & 7))) << 4) + 2 * (k & 7);
    asm volatile("st.shared.b16 [%0], %1;\n" ::"r"(addr), "h"((unsigned short)bits) : "memory");
  }
}

template <int N>
__device__ __forceinline__ void scale_o(float (&o)[kVTiles][N / 2], const float (&r)[N / 4]) {
  bool unit = true;                                      // once the maxima settle r == 1: skip the multiplies
#pragma unroll
  for (int ci = 0; ci < N / 4; ++ci) unit = unit && r[ci] == 1.f;
  if (__all_sync(0xffffffffu, unit)) return;
#pragma unroll
  for (int mt = 0; mt < kVTiles; ++mt)
#pragma unroll
    for (int i = 0; i < N / 2; ++i) o[mt][i] *= r[2 * (i >> 2) + (i & 1)];
}

// Oᵀ += Vᵀ · Pᵀ: V tile mt (dims 64mt..64mt+63) is the A operand read MN-major (8-token groups kGroupBytes
// apart, so 16 tokens = 2 groups per k-step); P is B, K-major.
template <int N, bool kBF16>
__device__ __forceinline__ void pv_block(float (&o)[kVTiles][N / 2], uint32_t stage, uint32_t sP) {
  const uint64_t dp = desc_k_major(sP);
  wgmma_fence();
#pragma unroll
  for (int mt = 0; mt < kVTiles; ++mt) {
    const uint64_t dv = smem_desc_sw128(stage + mt * 1024, kTileBytes, kGroupBytes);
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk)
      wgmma_narrow_ss<N, kBF16, 1>(o[mt], dv + ((kk * 2 * kGroupBytes) >> 4), dp + ((kk * 32) >> 4), 1);
  }
  wgmma_commit();
  wgmma_wait<0>();
#pragma unroll
  for (int mt = 0; mt < kVTiles; ++mt) fence_accumulators(o[mt]);
}

// The 16-bit out rows of a chunk through shared memory (the Q region: dead once the chunk's last Q·Kᵀ is done).
// A fragment value is one dim of one query row, and stored straight to `out` each instruction wrote 2 B a lane,
// 16 B into each of 4 rows. Staged as [query row][512 dims] (1 KB a row, 16-B chunk j at j ^ (row & 7): the 4 rows
// of one instruction then hit 4 different bank groups), the rows go out 16 B a lane, 512 contiguous bytes a warp.
template <int N, bool kBF16>
__device__ __forceinline__ void store_out_rows(const DecodeParams& p, const Chunk& c,
                                               const float (&o)[kVTiles][N / 2], const float (&inv)[N / 4], int hk,
                                               int dim0, int lane, uint32_t sQ, int tid) {
  const int rows = min((int)p.rows, N), ngroups = (int)p.ngroups;
#pragma unroll
  for (int i = 0; i < N / 2; ++i) {
    const int ci = 2 * (i >> 2) + (i & 1), col = column_of(ci, lane), dim = dim0 + 8 * ((i >> 1) & 1);
#pragma unroll
    for (int mt = 0; mt < kVTiles; ++mt) {
      const int d = 64 * mt + dim;                           // d / 8 is the 16-B chunk, d % 8 = lane / 4
      const uint32_t addr = sQ + col * 1024 + ((((d >> 3) ^ (col & 7))) << 4) + 2 * (d & 7);
      const uint32_t bits = pack2<kBF16>(o[mt][i] * inv[ci], 0.f) & 0xffffu;
      asm volatile("st.shared.b16 [%0], %1;\n" ::"r"(addr), "h"((unsigned short)bits) : "memory");
    }
  }
  consumer_sync(kBarSum);                                    // every warp's dims of every row are staged
  for (int idx = tid; idx < rows * 64; idx += kConsumerThreads) {
    const int col = idx >> 6, j = idx & 63;
    const uint4 v = ld_shared_v4(sQ + col * 1024 + ((j ^ (col & 7)) << 4));
    const int s = col / ngroups, head = hk * ngroups + col % ngroups;
    *reinterpret_cast<uint4*>(static_cast<uint8_t*>(p.out) + 2 * out_row_offset(p, c.req, s, head) + 16 * j) = v;
  }
}

// Chunk epilogue: reduce the partial sums over the warpgroup, then O / sum and the LSE (natural log; +inf for a
// row with no key): 16-bit to `out` through shared memory (store_out_rows), or fp32 to the split workspace
// straight from the fragments (8 lanes write a whole 32-B sector there).
template <int N, bool kBF16>
__device__ __forceinline__ void store_chunk(const DecodeParams& p, const Chunk& c, const float (&o)[kVTiles][N / 2],
                                            Columns<N>& cs, float* red, int hk, int warp, int lane, uint32_t sQ,
                                            int tid) {
  float inv[N / 4];
#pragma unroll
  for (int ci = 0; ci < N / 4; ++ci) {
    const float x = column_reduce(cs.sum[ci], [](float a, float b) { return a + b; });
    if (lane < 4) red[warp * N + column_of(ci, lane)] = x;
  }
  consumer_sync(kBarSum);
  const int rows = (int)p.rows, ngroups = (int)p.ngroups;
#pragma unroll
  for (int ci = 0; ci < N / 4; ++ci) {
    const int col = column_of(ci, lane);
    const float total = (red[col] + red[N + col]) + (red[2 * N + col] + red[3 * N + col]);
    inv[ci] = (total > 0.f) ? 1.f / total : 0.f;        // empty (or NaN) row -> output 0
    if (warp == 0 && lane < 4 && col < rows) {
      const float lse2 = row_lse2(cs.max2[ci], total);
      if (!c.is_split) {
        const int s = col / ngroups, head = hk * ngroups + col % ngroups;
        p.lse[lse_index(p, c.req, s, head)] = lse_natural(lse2);
      } else {
        p.lse_accum[accum_row(p, c, hk, rows, col)] = lse2;
      }
    }
  }
  const int dim0 = 16 * warp + lane / 4;
  if (!c.is_split) {
    store_out_rows<N, kBF16>(p, c, o, inv, hk, dim0, lane, sQ, tid);
    return;
  }
#pragma unroll
  for (int i = 0; i < N / 2; ++i) {
    const int ci = 2 * (i >> 2) + (i & 1), col = column_of(ci, lane), dim_hi = 8 * ((i >> 1) & 1);
    if (col >= rows) continue;
    float* dst = p.o_accum + accum_row(p, c, hk, rows, col) * kHeadDimV;   // 8 lanes: one whole 32-B sector
#pragma unroll
    for (int mt = 0; mt < kVTiles; ++mt) dst[64 * mt + dim0 + dim_hi] = o[mt][i] * inv[ci];
  }
}

template <int N, bool kBF16>
__device__ void consume(const DecodeParams& p, const int* meta, int hk, uint32_t base, float* red, int tid) {
  using P = Plan<N>;
  const uint32_t sQ = base + P::kOffQ, sP = base + P::kOffP, stage0 = base + P::kOffStage0;
  const uint32_t full0 = base + P::kOffFull, empty0 = base + P::kOffEmpty;
  const int lane = tid & 31, warp = __shfl_sync(0xffffffffu, tid / 32, 0);
  const int begin_pos = __ldg(meta + 0), begin_blk = __ldg(meta + 1), end_pos = __ldg(meta + 2),
            end_blk = __ldg(meta + 3), begin_split = __ldg(meta + 4);
  const bool reordered = __ldg(meta + 5) != 0;
  const float scale_log2 = p.scale_log2;
  uint32_t g = 0;                                        // blocks consumed in this CTA's lifetime

  for (int pos = begin_pos; pos <= end_pos; ++pos) {
    const Chunk c = chunk_of(p, pos, begin_pos, begin_blk, end_pos, end_blk, begin_split, 0, reordered);
    Columns<N> cs;
#pragma unroll
    for (int ci = 0; ci < N / 4; ++ci) {
      cs.key_limit[ci] = key_limit(p, c.seqlen, column_of(ci, lane));
      cs.max2[ci] = kMaxInit;
      cs.sum[ci] = 0.f;
    }
    float o[kVTiles][N / 2];
#pragma unroll
    for (int mt = 0; mt < kVTiles; ++mt)
#pragma unroll
      for (int i = 0; i < N / 2; ++i) o[mt][i] = 0.f;

    if (c.last > c.first) {
      if (tid < 4 * N) load_q_tile_async<P::kQTile>(p, sQ, c.req, 0, hk, tid / 4, tid % 4);
      cp_async_commit();
      cp_async_wait<0>();
      fence_proxy_async_smem();
      consumer_sync(kBarChunk);
      for (int blk = c.first; blk < c.last; ++blk, ++g) {
        const uint32_t s = g & 1, stage = stage0 + s * kRowTileBytes;
        float acc[N / 2], r[N / 4];
        mbarrier_wait(full0 + 8 * s, (g >> 1) & 1);
        qk_block<N, kBF16>(acc, sQ, stage);

        const int tok0 = blk * kBlockN + 16 * warp + lane / 4;
        softmax_block<N, kBF16>(acc, cs, r, red, sP, tok0, warp, lane, scale_log2);
        const int valid = c.seqlen - blk * kBlockN;
        if (valid < kBlockN)
          zero_v_tail<kConsumerThreads>(stage, max(valid, 0), tid, [](int r, int t) { return row_offset(r, t); });
        fence_proxy_async_smem();
        consumer_sync(kBarP);                            // P (and a zeroed V tail) complete for the wgmmas
        scale_o<N>(o, r);
        pv_block<N, kBF16>(o, stage, sP);
        if (lane == 0) mbarrier_arrive(empty0 + 8 * s); // this warp is done with the stage
      }
    }
    if (pos == end_pos) FMLA_TRACE_CTA(2);               // trace builds: the last chunk's blocks are done
    store_chunk<N, kBF16>(p, c, o, cs, red, hk, warp, lane, sQ, tid);
    consumer_sync(kBarChunk);                            // Q and the reduction buffer are reused next chunk
  }
  FMLA_TRACE_CTA(1);
}

template <int N, bool kBF16>
__device__ void decode_cta(const TmaDesc* kv_map, const DecodeParams& p) {
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  const uint32_t raw = smem_u32(smem_raw), base = (raw + 1023u) & ~1023u;
  float* red = reinterpret_cast<float*>(smem_raw + (base - raw) + Plan<N>::kOffRed);
  const int tid = threadIdx.x, hk = blockIdx.y;
  const int* meta = p.sched_meta + blockIdx.z * 8;
  const uint32_t full0 = base + Plan<N>::kOffFull, empty0 = base + Plan<N>::kOffEmpty;
  allow_dependent_launch();   // the combine's CTAs may be placed as this grid's SMs free up (mla_combine.cu)
  if (tid == 0) {
    prefetch_tma_desc(kv_map);
    for (int i = 0; i < 2; ++i) {
      mbarrier_init(full0 + 8 * i, 1);
      mbarrier_init(empty0 + 8 * i, kConsumerThreads / 32);
    }
    fence_mbarrier_init();
  }
  __syncthreads();
  FMLA_TRACE_CTA(0);
  if (tid >= kConsumerThreads) {
    if (tid == kConsumerThreads) produce<N>(kv_map, p, meta, hk, base + Plan<N>::kOffStage0, full0, empty0);
    return;
  }
  consume<N, kBF16>(p, meta, hk, base, red, tid);
}

}  // namespace narrow
}  // namespace fmla

#define FMLA_NARROW_ENTRY(NAME, N, BF16)                                                                   \
  extern "C" __global__ void __launch_bounds__(fmla::narrow::kThreadsNarrow, 1)                            \
      NAME(const __grid_constant__ fmla::TmaDesc kv_map, const __grid_constant__ fmla::DecodeParams p) {   \
    fmla::narrow::decode_cta<N, BF16>(&kv_map, p);                                                        \
  }
FMLA_NARROW_ENTRY(mla_decode_narrow16_bf16, 16, true)
FMLA_NARROW_ENTRY(mla_decode_narrow16_fp16, 16, false)
FMLA_NARROW_ENTRY(mla_decode_narrow32_bf16, 32, true)
FMLA_NARROW_ENTRY(mla_decode_narrow32_fp16, 32, false)
