// EXPERIMENTAL (not yet run on a GPU; opt in with FLASHMLA_RT_DECODE_KERNEL=seesaw): MLA decode for sm_90a
// with TMA loads and a two-warpgroup "seesaw" schedule. Same contract as mla_decode_sm90.cu (DecodeParams,
// split-KV chunks, outputs), plus a 4-D tensor map over the KV cache (576, h_kv, page, num_blocks).
//
// Why (bench/NOTES.md, v2): the cp.async kernel spends ~3.3 µs per 64-token block inside the SM whatever
// feeds it; its Q·Kᵀ is split by tokens, so both warpgroups read all of Q from shared memory per block.
// Here each warpgroup owns whole blocks: WG0 the even block of a pair (stage 0), WG1 the odd one (stage 1),
// and computes S = Q·Kᵀ with N = 64, so Q is read once per block. O stays split by columns (WG0 O[:, :256],
// WG1 O[:, 256:]), so P of each block is shared through shared memory, written into the block's RoPE tile
// (K columns 512..575, dead once its owner's Q·Kᵀ is done). The running max is shared; per pair:
//   WG0: S0, m0 = max(m, rowmax S0), r0, P0 -> stage0.tile8 -> [P0 ready] -> O_L = O_L r0 + P0 V0_L
//   WG1: S1 (overlaps WG0's softmax); [P0 ready] -> O_R = O_R r0 + P0 V0_R; m1 = max(m0, rowmax S1), r1,
//        P1 -> stage1.tile8 (overlaps that MMA) -> [P1 ready] -> O_R = O_R r1 + P1 V1_R
//   WG0: [P1 ready] -> O_L = O_L r1 + P1 V1_L
// Loads: every 64x64 tile of a stage has its own mbarrier; a tile is refilled (TMA, one elected thread) as
// soon as its last reader is done: tiles 0-3 by WG0, tiles 4-7 and the P tile by WG1 (or WG0 for stage 1).
// Rows of the sequence's last page past its end are loaded by TMA (they may hold NaN) and are zeroed in V
// before P·V; pages past the end and invalid block ids are given an out-of-range coordinate (zero fill).
#include "common/nvrtc_shim.cuh"
#include "common/ptx_async.cuh"
#include "common/ptx_tma.cuh"
#include "common/ptx_wgmma.cuh"
#include "common/softmax.cuh"
#include "common/decode_params.cuh"
#include "common/decode_tile.cuh"

namespace fmla {
namespace seesaw {

// Shared-memory plan (offsets from a 1024-B aligned base).
constexpr int kOffQ = 0;                                  // [9][64][128 B] Q
constexpr int kOffStage0 = kRowTileBytes;                 // even block of a pair: [9][64][128 B]
constexpr int kOffStage1 = 2 * kRowTileBytes;             // odd block
constexpr int kOffMax = 3 * kRowTileBytes;                // float [64]: shared running max (log2 units)
constexpr int kOffScale0 = kOffMax + 4 * kBlockM;         // float [64]: r0 published by WG0
constexpr int kOffScale1 = kOffScale0 + 4 * kBlockM;      // float [64]: r1 published by WG1
constexpr int kOffRowSum = kOffScale1 + 4 * kBlockM;      // float [2][64]
constexpr int kOffBars = kOffRowSum + 8 * kBlockM;        // uint64 [2 stages][9 tiles]
constexpr int kSmemUsed = kOffBars + 2 * kKTiles * 8;
constexpr int kSmemBytes = kSmemUsed + 1024;
static_assert(kSmemBytes <= 232448, "exceeds the 227 KB opt-in shared memory of sm_90");
constexpr int kPTile = 8 * kTileBytes;                    // offset of the RoPE tile, reused for P

// Named barriers (0 is __syncthreads). "arrive" by the producing WG, "sync" by the consuming one.
enum : int { kBarP0Ready = 1, kBarP1Ready = 2, kBarPV0Done = 3, kBarPV1Done = 4, kBarWG0 = 5, kBarWG1 = 6,
             kBarRowSum = 7 };

// TMA loads of tiles [t0, t1) of 64-token block `blk` into a stage; one thread calls it.
__device__ __forceinline__ void issue_block_tiles(const TmaDesc* map, const DecodeParams& p, const Chunk& c,
                                                  int hk, int blk, uint32_t stage, uint32_t bars, int t0, int t1) {
  const int page_shift = (int)p.page_shift, page = 1 << page_shift;
  const int box_rows = min(page, kBlockN), boxes = kBlockN / box_rows;
  int ids[4];                                             // page ids of the (up to 4) boxes of this block
#pragma unroll
  for (int bx = 0; bx < 4; ++bx) {
    ids[bx] = (int)p.num_cache_blocks;                    // out of range: TMA zero-fills the box
    const int tok = blk * kBlockN + bx * box_rows, pg = tok >> page_shift;
    if (bx < boxes && tok < c.seqlen && pg < p.bt_width) {
      const int v = __ldg(p.block_table + c.req * p.bt_stride + pg);
      if (v >= 0 && v < p.num_cache_blocks) ids[bx] = v;
    }
  }
  const int tok_in_page = (blk * kBlockN) & (page - 1);   // 0 when page <= 64
  for (int t = t0; t < t1; ++t) {
    mbarrier_arrive_expect_tx(bars + 8 * t, kTileBytes);   // boxes sum to one 64x64 tile, zero-filled or not
#pragma unroll
    for (int bx = 0; bx < 4; ++bx)
      if (bx < boxes)
        tma_load_4d(stage + t * kTileBytes + bx * box_rows * 128, map, 64 * t, hk, tok_in_page, ids[bx],
                    bars + 8 * t);
  }
}

// S[64x64] = Q K^T of the block in `stage`, tile by tile as the TMA loads land.
template <bool kBF16>
__device__ __forceinline__ void qk_block(float (&s)[32], uint32_t sQ, uint32_t stage, uint32_t bars,
                                         uint32_t parity) {
  const uint64_t dq = desc_k_major(sQ), dk = desc_k_major(stage);
  for (int t = 0; t < kKTiles; ++t) mbarrier_wait(bars + 8 * t, parity);
  wgmma_fence();
#pragma unroll
  for (int t = 0; t < kKTiles; ++t) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t off = (t * kTileBytes + k * 32) >> 4;
      wgmma_m64n64k16_ss<kBF16>(s, dq + off, dk + off, (t | k) != 0);
    }
  }
  wgmma_commit();
  wgmma_wait<0>();
  fence_accumulators(s);
}

// Mask, new running max against rs.max2, rescale r (applied to rs.sum), P = exp2(S c - max) in place.
__device__ __forceinline__ void softmax_own_block(float (&s)[32], RowState (&rs)[2], float (&r)[2], int tok0,
                                                  float scale_log2) {
  float mx[2] = {neg_inf(), neg_inf()};
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int v = 0; v < 4; ++v) {
      const int h = v >> 1, tok = tok0 + 8 * j + (v & 1);
      float& x = s[4 * j + v];
      x = (tok < rs[h].key_limit) ? x : neg_inf();        // select, never arithmetic: NaN-safe
      mx[h] = fmaxf(mx[h], x);
    }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float new_max = fmaxf(rs[h].max2, quad_max(mx[h]) * scale_log2);
    r[h] = exp2_approx(rs[h].max2 - new_max);
    rs[h].max2 = new_max;
    rs[h].sum *= r[h];
  }
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int v = 0; v < 4; ++v) {
      const int h = v >> 1;
      s[4 * j + v] = exp2_approx(fmaf(s[4 * j + v], scale_log2, -rs[h].max2));
      rs[h].sum += s[4 * j + v];
    }
}

// P (16-bit) into a K-major SW128 tile: rows row_lo and row_lo + 8, token chunk j at 16-B slot j ^ (row & 7).
template <bool kBF16>
__device__ __forceinline__ void store_p(const float (&s)[32], uint32_t tile, int row_lo, int lane) {
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const uint32_t off = ((j ^ (row_lo & 7)) << 4) + 4 * (lane & 3);
    asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(tile + row_lo * 128 + off), "r"(pack2<kBF16>(s[4 * j], s[4 * j + 1]))
                 : "memory");
    asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(tile + (row_lo + 8) * 128 + off),
                 "r"(pack2<kBF16>(s[4 * j + 2], s[4 * j + 3])) : "memory");
  }
}

// Zero V rows [valid, 64) of tiles 0..7 (the sequence ends inside this block; TMA loaded what follows it).
__device__ __forceinline__ void zero_v_tail(uint32_t stage, int valid, int t_in_wg) {
  const int per_tile = (kBlockN - valid) * 8;             // 16-B chunks per tile
  for (int i = t_in_wg; i < 8 * per_tile; i += 128) {
    const int tile = i / per_tile, rem = i % per_tile;
    const uint32_t addr = stage + tile * kTileBytes + (valid + rem / 8) * 128 + (rem % 8) * 16;
    asm volatile("st.shared.v4.b32 [%0], {%1, %1, %1, %1};\n" ::"r"(addr), "r"(0) : "memory");
  }
}

__device__ __forceinline__ void scale_o(float (&o)[128], const float (&r)[2]) {
#pragma unroll
  for (int j = 0; j < 32; ++j) {
    o[4 * j + 0] *= r[0]; o[4 * j + 1] *= r[0];
    o[4 * j + 2] *= r[1]; o[4 * j + 3] *= r[1];
  }
}

// O_half += P V_half: P from `p_tile`, V columns [256 half, 256 half + 256) of `stage` (tiles 4 half..4 half+3).
template <bool kBF16>
__device__ __forceinline__ void pv_issue(float (&o)[128], uint32_t p_tile, uint32_t stage, int half) {
  const uint64_t dp = desc_k_major(p_tile), dv = desc_mn_major(stage + half * 4 * kTileBytes, kTileBytes);
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < kBlockN / 16; ++kk)
    wgmma_m64n256k16_ss_tb<kBF16>(o, dp + ((kk * 32) >> 4), dv + ((kk * 2048) >> 4), 1);
  wgmma_commit();
}

__device__ __forceinline__ void wait_tiles(uint32_t bars, int t0, int t1, uint32_t parity) {
  for (int t = t0; t < t1; ++t) mbarrier_wait(bars + 8 * t, parity);
}

__device__ __forceinline__ int valid_rows_if_tail(const Chunk& c, int blk) {
  const int valid = c.seqlen - blk * kBlockN;             // tokens of this block inside the sequence
  return (valid > 0 && valid < kBlockN) ? valid : 0;
}

// The owner of a block hands it to the other WG: running max and rescale of its rows, V rows past the sequence
// end zeroed, P in the block's RoPE tile, made visible to the async proxy, then `ready` is signalled.
template <bool kBF16>
__device__ __forceinline__ void publish_block(const float (&s)[32], const RowState (&rs)[2], const float (&r)[2],
                                              float* s_max, float* s_scale, const Chunk& c, int blk, uint32_t stage,
                                              int row_lo, int lane, int t_in_wg, int ready) {
  if ((lane & 3) == 0) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      s_max[row_lo + 8 * h] = rs[h].max2;
      s_scale[row_lo + 8 * h] = r[h];
    }
  }
  if (const int valid = valid_rows_if_tail(c, blk)) zero_v_tail(stage, valid, t_in_wg);
  store_p<kBF16>(s, stage + kPTile, row_lo, lane);
  fence_proxy_async_smem();
  named_barrier_arrive(ready, kThreads);
}

// The other WG's side of publish_block: take over the published running max, rescale the own row sums.
__device__ __forceinline__ void adopt_published(RowState (&rs)[2], float (&r)[2], const float* s_max,
                                                const float* s_scale, int row_lo) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    r[h] = s_scale[row_lo + 8 * h];
    rs[h].max2 = s_max[row_lo + 8 * h];
    rs[h].sum *= r[h];
  }
}

template <bool kBF16>
__device__ void decode_cta(const TmaDesc* kv_map, const DecodeParams& p) {
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  const uint32_t raw = smem_u32(smem_raw), base = (raw + 1023u) & ~1023u;
  uint8_t* smem = smem_raw + (base - raw);
  float* s_max = reinterpret_cast<float*>(smem + kOffMax);
  float* s_scale0 = reinterpret_cast<float*>(smem + kOffScale0);
  float* s_scale1 = reinterpret_cast<float*>(smem + kOffScale1);
  float* s_rowsum = reinterpret_cast<float*>(smem + kOffRowSum);
  const uint32_t sQ = base + kOffQ, stage0 = base + kOffStage0, stage1 = base + kOffStage1;
  const uint32_t bars0 = base + kOffBars, bars1 = bars0 + 8 * kKTiles;

  const int tid = threadIdx.x, wg = tid / 128, t_in_wg = tid & 127, lane = tid & 31;
  const int row_lo = 16 * (t_in_wg / 32) + lane / 4;
  const int load_row = tid / 4, load_sub = tid % 4;
  const int m_block = blockIdx.x, hk = blockIdx.y;
  const int* meta = p.sched_meta + blockIdx.z * 8;
  const int begin_req = __ldg(meta + 0), begin_blk = __ldg(meta + 1), end_req = __ldg(meta + 2),
            end_blk = __ldg(meta + 3), begin_split = __ldg(meta + 4);
  const float scale_log2 = (float)p.scale_log2;

  if (tid == 0) {
    prefetch_tma_desc(kv_map);
    for (int i = 0; i < 2 * kKTiles; ++i) mbarrier_init(bars0 + 8 * i, 1);
    fence_mbarrier_init();
  }
  __syncthreads();
  uint32_t loads0 = 0, loads1 = 0;                        // blocks loaded into each stage (CTA lifetime)

  for (int req = begin_req; req <= end_req; ++req) {
    const Chunk c = chunk_of(p, req, begin_req, begin_blk, end_req, end_blk, begin_split, m_block);
    const int n = c.last - c.first;
    RowState rs[2];
    init_rows(rs, p, c, m_block, row_lo);
    float o[128];
#pragma unroll
    for (int i = 0; i < 128; ++i) o[i] = 0.f;

    if (n > 0) {
      // ---- prologue: Q by cp.async (all threads), the first two blocks by TMA
      load_q_tile_async(p, sQ, req, m_block, hk, load_row, load_sub);
      cp_async_commit();
      if (tid == 0) {
        issue_block_tiles(kv_map, p, c, hk, c.first, stage0, bars0, 0, kKTiles);
        if (n > 1) issue_block_tiles(kv_map, p, c, hk, c.first + 1, stage1, bars1, 0, kKTiles);
      }
      loads0 += 1;
      loads1 += (n > 1);
      cp_async_wait<0>();
      fence_proxy_async_smem();
      __syncthreads();

      // ---- block pairs
      for (int i = 0; i < n; i += 2) {
        const bool has1 = i + 1 < n, refill0 = i + 2 < n, refill1 = i + 3 < n;
        const int blk0 = c.first + i, blk1 = blk0 + 1;
        const uint32_t par0 = (loads0 - 1) & 1, par1 = (loads1 - 1) & 1;
        float s[32];
        if (wg == 0) {
          qk_block<kBF16>(s, sQ, stage0, bars0, par0);
          float r0[2];
          softmax_own_block(s, rs, r0, blk0 * kBlockN + 2 * (lane & 3), scale_log2);
          publish_block<kBF16>(s, rs, r0, s_max, s_scale0, c, blk0, stage0, row_lo, lane, t_in_wg, kBarP0Ready);
          scale_o(o, r0);
          named_barrier_sync_id(kBarWG0, 128);            // every WG0 thread's P0 / zeroed rows are written
          pv_issue<kBF16>(o, stage0 + kPTile, stage0, 0);
          if (has1) {
            named_barrier_sync_id(kBarP1Ready, kThreads);
            float r1[2];
            adopt_published(rs, r1, s_max, s_scale1, row_lo);
            wgmma_wait<0>();
            fence_accumulators(o);
            named_barrier_arrive(kBarPV0Done, kThreads);
            if (refill0 && t_in_wg == 0) issue_block_tiles(kv_map, p, c, hk, blk0 + 2, stage0, bars0, 0, 4);
            scale_o(o, r1);
            wait_tiles(bars1, 0, 4, par1);                // V1_L landed (seen by WG1 in its Q·Kᵀ; observe it here too)
            pv_issue<kBF16>(o, stage1 + kPTile, stage1, 0);
            wgmma_wait<0>();
            fence_accumulators(o);
            named_barrier_sync_id(kBarPV1Done, kThreads);  // WG1 is done with P1 and V1_R
            if (refill1 && t_in_wg == 0) {
              issue_block_tiles(kv_map, p, c, hk, blk1 + 2, stage1, bars1, 0, 4);
              issue_block_tiles(kv_map, p, c, hk, blk1 + 2, stage1, bars1, 8, 9);
            }
          } else {
            wgmma_wait<0>();
            fence_accumulators(o);
            named_barrier_arrive(kBarPV0Done, kThreads);
          }
        } else {
          if (has1) qk_block<kBF16>(s, sQ, stage1, bars1, par1);
          named_barrier_sync_id(kBarP0Ready, kThreads);
          float r0[2];
          adopt_published(rs, r0, s_max, s_scale0, row_lo);
          scale_o(o, r0);
          wait_tiles(bars0, 4, 8, par0);                  // V0_R landed
          pv_issue<kBF16>(o, stage0 + kPTile, stage0, 1);
          if (has1) {
            float r1[2];
            softmax_own_block(s, rs, r1, blk1 * kBlockN + 2 * (lane & 3), scale_log2);   // overlaps P0 V0_R
            publish_block<kBF16>(s, rs, r1, s_max, s_scale1, c, blk1, stage1, row_lo, lane, t_in_wg, kBarP1Ready);
            wgmma_wait<0>();
            fence_accumulators(o);
            if (refill0 && t_in_wg == 0) issue_block_tiles(kv_map, p, c, hk, blk0 + 2, stage0, bars0, 4, 8);
            named_barrier_sync_id(kBarPV0Done, kThreads);  // WG0 is done with P0: its tile can be refilled
            if (refill0 && t_in_wg == 0) issue_block_tiles(kv_map, p, c, hk, blk0 + 2, stage0, bars0, 8, 9);
            scale_o(o, r1);
            named_barrier_sync_id(kBarWG1, 128);          // every WG1 thread's P1 / zeroed rows are written
            pv_issue<kBF16>(o, stage1 + kPTile, stage1, 1);
            wgmma_wait<0>();
            fence_accumulators(o);
            named_barrier_arrive(kBarPV1Done, kThreads);
            if (refill1 && t_in_wg == 0) issue_block_tiles(kv_map, p, c, hk, blk1 + 2, stage1, bars1, 4, 8);
          } else {
            wgmma_wait<0>();
            fence_accumulators(o);
            named_barrier_sync_id(kBarPV0Done, kThreads);
          }
        }
        loads0 += refill0;
        loads1 += refill1;
      }
    }
    store_chunk<kBF16>(p, c, o, rs, s_rowsum, wg, lane, row_lo, hk, kBarRowSum);
    __syncthreads();                                      // Q, stages and row sums are reused by the next chunk
  }
}

}  // namespace seesaw
}  // namespace fmla

extern "C" __global__ void __launch_bounds__(fmla::kThreads, 1)
    mla_decode_seesaw_bf16(const __grid_constant__ fmla::TmaDesc kv_map, const __grid_constant__ fmla::DecodeParams p) {
  fmla::seesaw::decode_cta<true>(&kv_map, p);
}
extern "C" __global__ void __launch_bounds__(fmla::kThreads, 1)
    mla_decode_seesaw_fp16(const __grid_constant__ fmla::TmaDesc kv_map, const __grid_constant__ fmla::DecodeParams p) {
  fmla::seesaw::decode_cta<false>(&kv_map, p);
}
