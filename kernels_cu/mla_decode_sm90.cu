// MLA decode for sm_90a: TMA loads and a two-warpgroup "seesaw" schedule. One CTA decodes the 64 query rows of
// one m-block and KV head over the split-KV chunks its schedule row assigns (DecodeParams, mla_metadata.cu);
// KV comes through two 5-D tensor maps over the paged cache that walk token rows (KvMaps, below).
//
// Each warpgroup owns whole 64-token blocks: WG0 the even block of a pair (stage 0), WG1 the odd one (stage 1),
// and computes S = Q·Kᵀ with N = 64. O is split by columns (WG0 O_L = O[:, :256], WG1 O_R = O[:, 256:]). The
// running max is shared; per pair, with r0 = exp2(m - m0), r1 = exp2(m0 - m1):
//   WG0: S0; m0, r0 -> [Scale0] ; P0 ; O_L = O_L r0 + P0 V0_L (P0 from registers)
//   WG1: S1; [Scale0] m1, r1 -> [Scale1] ; P1 ; O_R = O_R r0 r1 + P1 V1_R (registers); P1 -> smem [P1 ready]
//   WG0: [Scale1] P0 r1 -> smem [P0 ready] ; O_L = O_L r1 + P1 V1_L (P1 from smem)
//   WG1: [P0 ready] O_R += (P0 r1) V0_R (smem)
// so one warpgroup's softmax runs under the other's MMAs. Each publishes its row max before its exps (the other
// needs only the max and its rescale), so the two softmaxes overlap too. P1 is written into stage 1's RoPE tile
// (K columns 512..575, dead once WG1's Q·Kᵀ is done); P0 has a tile of its own, so stage 0's RoPE region is
// released, and refilled, right after WG0's Q·Kᵀ.
// Loads: a stage holds a block as three regions, V_L (tiles 0-3), V_R (tiles 4-7) and the RoPE tile, each loaded
// by one TMA (one per page below 64) that reads whole 512-B (128-B) runs of every token row, completing on its
// own "full" mbarrier. A third warpgroup produces (setmaxnreg: the consumers get 240 registers, it keeps 24): one
// warp per stage reads the page ids and refills each region as soon as its last reader releases it on the
// region's "empty" mbarrier: stage 0 RoPE after WG0's Q·Kᵀ, stage 0 V_L after WG0's first P·V, stage 1 V_R after
// WG1's first P·V, the rest after the second P·Vs. The consumers never issue a TMA. Each WG's Q·Kᵀ waits region
// by region, early-refilled regions first. Once no row's max moves, the O rescale is skipped.
// Rows of the sequence's last page past its end are loaded by TMA (they may hold NaN) and are zeroed in V before
// P·V; pages past the end and invalid block ids get an out-of-range coordinate (TMA zero fill).
#include "common/nvrtc_shim.cuh"
#include "common/trace_cta.cuh"
#ifdef FMLA_TRACE
// Trace-build helpers, ahead of decode_tile.cuh so that its epilogue hook can use them. The arrays and the other
// events are described with the timeline probe below; fmla_trace_chunk_cur is the chunk whose epilogue runs, set
// by decode_cta, since store_chunk does not know its chunk's index.
extern "C" __device__ unsigned long long fmla_trace_chunk[8 * 16];
extern "C" __device__ int fmla_trace_chunk_cur;
__device__ __forceinline__ bool is_trace_thread() {   // thread 0 of CTA (0, 0, 0)
  return threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0;
}
// e = 4 both warpgroups' row sums exchanged, 5 thread 0's warp has issued its stores.
#define FMLA_EPILOGUE_MARK(e)                                                                            \
  do {                                                                                                   \
    if (is_trace_thread() && fmla_trace_chunk_cur < 16) fmla_trace_chunk[8 * fmla_trace_chunk_cur + (e)] = globaltimer_ns(); \
  } while (0)
#endif
#include "common/ptx_async.cuh"
#include "common/ptx_grid.cuh"
#include "common/ptx_tma.cuh"
#include "common/ptx_wgmma.cuh"
#include "common/softmax.cuh"
#include "common/decode_params.cuh"
#include "common/decode_tile.cuh"
#include "common/kv_tma.cuh"

namespace fmla {
namespace seesaw {

// Shared-memory plan (offsets from a 1024-B aligned base).
constexpr int kOffQ = 0;                                  // [9][64][128 B] Q
constexpr int kOffStage0 = kRowTileBytes;                 // even block of a pair: [9][64][128 B]
constexpr int kOffStage1 = 2 * kRowTileBytes;             // odd block
constexpr int kOffP0 = 3 * kRowTileBytes;                 // [64][128 B] P0 for WG1 (stage 0's RoPE tile frees early)
constexpr int kOffMax0 = kOffP0 + kTileBytes;             // float [64]: m0 published by WG0 (log2 units)
constexpr int kOffScale0 = kOffMax0 + 4 * kBlockM;        // float [64]: r0 published by WG0
constexpr int kOffMax1 = kOffScale0 + 4 * kBlockM;        // float [64]: m1 published by WG1
constexpr int kOffScale1 = kOffMax1 + 4 * kBlockM;        // float [64]: r1 published by WG1
constexpr int kOffRowSum = kOffScale1 + 4 * kBlockM;      // float [2][64]
constexpr int kOffBars = kOffRowSum + 8 * kBlockM;        // uint64 [2 stages][9 tiles]
constexpr int kOffEmpty = kOffBars + 2 * kKTiles * 8;     // uint64 [2 stages][3 regions]: released by a WG
// int [6]: this CTA's schedule (begin_pos, begin_blk, end_pos, end_blk), its tile's causal key shift and whether
// the schedule is reordered (column 5 of its row), for the producer, which re-reads them instead of holding them in its 24
// registers; then int [2]: each producer warp's next position, kept here across its block loop for the same reason.
constexpr int kOffProducerMeta = kOffEmpty + 2 * 3 * 8;
constexpr int kOffProducerCursor = kOffProducerMeta + 6 * 4;
constexpr int kOffProducerIds = kOffProducerCursor + 2 * 4;   // int [2 stages][4 boxes]: the next block's page ids
// float: scale_log2, read back by WG0 after it publishes m0, so that its exps cannot be scheduled above the arrive.
constexpr int kOffScaleCopy = kOffProducerIds + 2 * 4 * 4;
constexpr int kSmemUsed = kOffScaleCopy + 4;
constexpr int kSmemBytes = kSmemUsed + 1024;
static_assert(kSmemBytes <= 232448, "exceeds the 227 KB opt-in shared memory of sm_90");
#ifdef FMLA_EXPECT_SMEM_BYTES
static_assert(kSmemBytes == FMLA_EXPECT_SMEM_BYTES, "kernels.DECODE_SMEM_BYTES differs from kSmemBytes");
static_assert(kThreads + 128 == FMLA_EXPECT_THREADS, "kernels.DECODE_THREADS differs from the seesaw's block");
#endif
constexpr int kPTile = 8 * kTileBytes;                    // offset of the RoPE tile, reused for P1 in stage 1

// Stage layout: regions g = 0 (V_L, tiles 0-3), 1 (V_R, tiles 4-7), 2 (RoPE, tile 8) at g * kRegionBytes, each
// [8-token group][its tiles][8 rows][128 B] (the order a row-walking TMA box lands in), so 8-row groups of a tile
// are region_tiles * 1,024 B apart; the RoPE region is the plain [64 rows][128 B] tile. Region g completes on
// the stage's mbarrier 4 g.
constexpr int kRegionBytes = 4 * kTileBytes;
__device__ __forceinline__ constexpr int region_of(int t) { return t >> 2; }
__device__ __forceinline__ constexpr int region_tiles(int g) { return g < 2 ? 4 : 1; }
__device__ __forceinline__ constexpr uint32_t tile_base(int t) { return region_of(t) * kRegionBytes + (t & 3) * 1024; }
__device__ __forceinline__ constexpr uint32_t group_stride(int t) { return region_tiles(region_of(t)) * 1024; }
__device__ __forceinline__ constexpr uint32_t row_offset(int r, int t) {
  return tile_base(t) + (r >> 3) * group_stride(t) + (r & 7) * 128;
}
__device__ __forceinline__ uint32_t tile_bar(uint32_t bars, int t) { return bars + 32 * region_of(t); }

struct KvMaps {                   // 5-D (row elements, token in 8-group, tile, 8-token group, page) over the cache
  const TmaDesc* v;               // box 64 x 8 x 4 x min(page, 64)/8 x 1: a V region
  const TmaDesc* rope;            // box 64 x 8 x 1 x min(page, 64)/8 x 1: the RoPE tile
};

// Page ids of the TMA boxes of 64-token block `blk` (one box per page below 64 tokens, else one) into `ids`
// (shared memory, int [4]); one thread, asynchronously (cp.async), so the loads overlap the producer's wait for a
// free region. Boxes past the sequence or the table get -1 at once; issue_region never trusts an id.
__device__ __forceinline__ void fetch_box_page_ids(const DecodeParams& p, const Chunk& c, int blk, uint32_t ids) {
  const int box_rows = min(1 << (int)p.page_shift, kBlockN), boxes = kBlockN / box_rows;
#pragma unroll 1
  for (int bx = 0; bx < boxes; ++bx) {
    const int tok = blk * kBlockN + bx * box_rows, pg = tok >> (int)p.page_shift;
    if (tok < c.seqlen && pg < p.bt_width)
      cp_async_4(ids + 4 * bx, p.block_table + (uint32_t)c.req * p.bt_stride + pg);   // req >= 0: no sign bits
    else
      st_shared_s32(ids + 4 * bx, -1);
  }
  cp_async_commit();
}

// Evict-first L2 hint on the KV loads: measured mixed on this kernel's rows (bench/NOTES.md), so off; the switch
// stays for experiments (-DFMLA_TMA_EVICT_FIRST=1).
#ifndef FMLA_TMA_EVICT_FIRST
#define FMLA_TMA_EVICT_FIRST 0
#endif

// TMA loads of region g of 64-token block `blk` into a stage; one thread, after fetch_box_page_ids and
// cp_async_wait. An id outside the cache becomes num_cache_blocks, which TMA zero-fills.
__device__ __forceinline__ void issue_region(const KvMaps& maps, const DecodeParams& p, int hk, int blk,
                                             uint32_t ids, uint32_t stage, uint32_t bars, int g) {
  const BoxGeometry bg = box_geometry(p, blk);
  const int box_rows = bg.box_rows, boxes = bg.boxes, group0 = bg.group0;
  const uint32_t dst = stage + g * kRegionBytes, bar = bars + 32 * g;
  mbarrier_arrive_expect_tx(bar, region_tiles(g) * kTileBytes);   // zero-filled boxes count their bytes too
#pragma unroll 1
  for (int bx = 0; bx < boxes; ++bx) {
    const int v = ld_shared_at_use(ids + 4 * bx);
    tma_load_5d(dst + bx * (box_rows / 8) * region_tiles(g) * 1024, g < 2 ? maps.v : maps.rope,
                hk * (int)p.k_stride_head, 0, 4 * g, group0,
                sanitize_page_id(p, v), bar, FMLA_TMA_EVICT_FIRST != 0);
  }
}

// Named barriers (0 is __syncthreads). "arrive" by the producing WG, "sync" by the consuming one.
enum : int { kBarScale0 = 1, kBarScale1 = 2, kBarP0Ready = 3, kBarP1Ready = 4, kBarWG0 = 5, kBarWG1 = 6,
             kBarRowSum = 7, kBarConsumers = 8 };

// Warp roles: warpgroups 0 and 1 consume (kThreads = 256 threads, 240 registers each), warpgroup 2 produces:
// its warp 0 loads stage 0, its warp 1 stage 1 (24 registers: 2 x 128 x 240 + 128 x 24 <= 64 K).
constexpr int kThreadsWithProducer = kThreads + 128;
constexpr int kConsumerRegs = 240, kProducerRegs = 24;
// setmaxnreg moves registers only within what the CTA was launched with: ptxas gives each of the 384 threads
// 65,536 / 384 rounded down to 8 = 168. If the consumers' increase needs more than the producer released,
// setmaxnreg.inc waits forever (a producer at 32 hung every launch, call 42).
constexpr int kLaunchRegs = (65536 / kThreadsWithProducer) & ~7;
static_assert(2 * 128 * kConsumerRegs + 128 * kProducerRegs <= kThreadsWithProducer * kLaunchRegs,
              "setmaxnreg: the consumers would wait forever for registers the producer never frees");

// Timeline probe (build with -DFMLA_TRACE=1 via FLASHMLA_RT_NVRTC_OPTIONS; bench/trace_decode.py reads it):
// clock64 of event `ev` of warpgroup `wg` in pair `pair` of CTA (0, 0, 0), first 64 pairs. Warpgroup 2 is the
// producer: events 0-2 (stage 0) and 3-5 (stage 1) are its region issues, by the stage's block count.
// Wall clock (%globaltimer, ns): fmla_trace_ns[pair] at WG0's start of each traced pair (with its clock64, the SM
// clock rate), and fmla_trace_cta (common/trace_cta.cuh) for every CTA: its start, end and last chunk's pairs done
// (the epilogue's start): CTA durations against the pairs' share, and the kernel's tail.
// fmla_trace_chunk[8 * k + e] (ns), CTA (0, 0, 0)'s chunk k < 16: e = 0 its Q issued, 1 Q landed (both warpgroups),
// 2 its pairs done, 3 its epilogue done (4 and 5: inside the epilogue, above): what a chunk boundary costs.
#ifdef FMLA_TRACE
extern "C" __device__ unsigned long long fmla_trace[3 * 8 * 64];
extern "C" __device__ unsigned long long fmla_trace_ns[64];
#define FMLA_TRACE_AT(wg, ev, pair)                                                                      \
  do {                                                                                                   \
    if (blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0 && (pair) < 64) {                          \
      fmla_trace[((wg) * 8 + (ev)) * 64 + (pair)] = clock64();                                           \
      if ((wg) == 0 && (ev) == 0) fmla_trace_ns[(pair)] = globaltimer_ns();                              \
    }                                                                                                    \
  } while (0)
#define FMLA_TRACE_EVENT(wg, ev, pair)                                                                   \
  do {                                                                                                   \
    if ((threadIdx.x & 127) == 0) FMLA_TRACE_AT(wg, ev, pair);                                           \
  } while (0)
#define FMLA_TRACE_CHUNK(k, e)                                                                           \
  do {                                                                                                   \
    if (is_trace_thread() && (k) < 16) fmla_trace_chunk[8 * (k) + (e)] = globaltimer_ns(); \
  } while (0)
#define FMLA_TRACE_CHUNK_CUR(k)                                                                          \
  do {                                                                                                   \
    if (is_trace_thread()) fmla_trace_chunk_cur = (k);                                                 \
  } while (0)
#else
#define FMLA_TRACE_CHUNK(k, e) do {} while (0)
#define FMLA_TRACE_CHUNK_CUR(k) do {} while (0)
#define FMLA_TRACE_AT(wg, ev, pair) do {} while (0)
#define FMLA_TRACE_EVENT(wg, ev, pair) do {} while (0)
#endif

// Q·Kᵀ tile order: each WG starts with the tiles of its stage that were refilled earliest.
template <int kWG>
__device__ __forceinline__ constexpr int qk_tile(int idx) {
  return kWG == 0 ? (idx < 4 ? idx : (idx == 4 ? 8 : idx - 1)) : (idx < 4 ? idx + 4 : (idx < 8 ? idx - 4 : 8));
}

// S[64x64] = Q K^T of the block in `stage`, each tile's wgmmas issued as soon as that tile has landed.
template <bool kBF16, int kWG>
__device__ __forceinline__ void qk_block(float (&s)[32], uint32_t sQ, uint32_t stage, uint32_t bars,
                                         uint32_t parity, int trace_pair) {
#pragma unroll
  for (int idx = 0; idx < kKTiles; ++idx) {
    const int t = qk_tile<kWG>(idx);
    mbarrier_wait(tile_bar(bars, t), parity);
    if (idx == kKTiles - 1) FMLA_TRACE_EVENT(kWG, 7, trace_pair);   // the block's last tile has landed
    wgmma_fence();
    const uint64_t dq = desc_k_major(sQ + t * kTileBytes), dk = smem_desc_sw128(stage + tile_base(t), 16, group_stride(t));
#pragma unroll
    for (int k = 0; k < 4; ++k) wgmma_m64n64k16_ss<kBF16>(s, dq + ((k * 32) >> 4), dk + ((k * 32) >> 4), (idx | k) != 0);
  }
  wgmma_commit();
  wgmma_wait<0>();
  fence_accumulators(s);
}

// A block's softmax in two phases, so that the running max, which is all the other warpgroup waits for, can be
// published before the exps. Phase 1: mask, new running max against rs.max2, r = rescale of the old max. It is on
// the pair's serial chain, so the mask runs only for a block that reaches past one of the warp's row limits (the
// sequence's last block, causal rows), and each row's max runs as two 8-long chains, not one of 16 (a deeper tree
// spills).
__device__ __forceinline__ void softmax_max(float (&s)[32], RowState (&rs)[2], float (&r)[2], int tok0,
                                            float scale_log2) {
  const int block_last = tok0 | (kBlockN - 1);             // tok0 = block start + 2 (lane & 3)
  if (!__all_sync(0xffffffffu, block_last < min(rs[0].key_limit, rs[1].key_limit))) {
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int v = 0; v < 4; ++v) {
        const int h = v >> 1, tok = tok0 + 8 * j + (v & 1);
        float& x = s[4 * j + v];
        x = (tok < rs[h].key_limit) ? x : neg_inf();      // select, never arithmetic: NaN-safe
      }
  }
  float mx[4] = {neg_inf(), neg_inf(), neg_inf(), neg_inf()};   // [2 h + (i & 1)]: two chains per row
#pragma unroll
  for (int i = 0; i < 32; ++i) mx[2 * ((i >> 1) & 1) + (i & 1)] = fmaxf(mx[2 * ((i >> 1) & 1) + (i & 1)], s[i]);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float new_max = fmaxf(rs[h].max2, quad_max(fmaxf(mx[2 * h], mx[2 * h + 1])) * scale_log2);
    r[h] = exp2_approx(rs[h].max2 - new_max);
    rs[h].max2 = new_max;
  }
}

// Phase 2: P = exp2(S c - max) in place (fp32), the row sums (two chains per row), and P packed to 16 bits as
// the A fragment of the P·V wgmma.
template <bool kBF16>
__device__ __forceinline__ void softmax_exp(float (&s)[32], uint32_t (&pa)[16], RowState (&rs)[2],
                                            const float (&r)[2], float scale_log2) {
  float sum[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int i = 0; i < 32; ++i) {
    const int h = (i >> 1) & 1;
    s[i] = exp2_approx(fmaf(s[i], scale_log2, -rs[h].max2));
    sum[2 * h + (i & 1)] += s[i];
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) rs[h].sum = rs[h].sum * r[h] + (sum[2 * h] + sum[2 * h + 1]);
#pragma unroll
  for (int i = 0; i < 16; ++i) pa[i] = pack2<kBF16>(s[2 * i], s[2 * i + 1]);
}

// P (16-bit pairs in A-fragment order) into a K-major SW128 tile: rows row_lo and row_lo + 8, token chunk j at
// 16-B slot j ^ (row & 7). stmatrix, two token chunks a call: lane group i = lane / 8 addresses row
// (its warp's first row) + lane % 8 + 8 (i & 1), chunk 2 q + (i >> 1), the order pa[4 q .. 4 q + 3] holds them in.
// store_out_rows (decode_tile.cuh) repeats this row expression on purpose: one shared helper let ptxas reschedule
// the seesaw, which read +0.4-0.8 % on rows 8/20 in calls 86-87, inside the run spreads (bench/NOTES.md).
__device__ __forceinline__ void store_p(const uint32_t (&pa)[16], uint32_t tile, int row_lo, int lane) {
  const int row = (row_lo - lane / 4) + (lane & 7) + 8 * ((lane >> 3) & 1), hi = lane >> 4;
#pragma unroll
  for (int q = 0; q < 4; ++q)
    stmatrix_x4(tile + row * 128 + (((2 * q + hi) ^ (row & 7)) << 4), pa[4 * q], pa[4 * q + 1], pa[4 * q + 2],
                pa[4 * q + 3]);
}

__device__ __forceinline__ void wait_tiles(uint32_t bars, int t0, int t1, uint32_t parity) {
  for (int t = t0; t < t1; t += 4) mbarrier_wait(tile_bar(bars, t), parity);
}

__device__ __forceinline__ int valid_rows_if_tail(const Chunk& c, int blk) {
  const int valid = c.seqlen - blk * kBlockN;             // tokens of this block inside the sequence
  return (valid > 0 && valid < kBlockN) ? valid : 0;
}

// Before the owner's first P·V of a block: if the sequence ends inside it, zero the V tail of the whole block
// (the other WG reads its half later, after a barrier the owner arrives on after this).
__device__ __forceinline__ void prepare_v(const Chunk& c, int blk, uint32_t stage, int t_in_wg, int wg_barrier) {
  if (const int valid = valid_rows_if_tail(c, blk)) {
    zero_v_tail<128>(stage, valid, t_in_wg, [](int r, int t) { return row_offset(r, t); });
    fence_proxy_async_smem();
    named_barrier_sync_id(wg_barrier, 128);
  }
}

__device__ __forceinline__ void scale_o(float (&o)[128], float r_lo, float r_hi) {
  // Once the running max settles, r == 1 (exp2(0) is exact): skip the 128 multiplies when the whole warp agrees.
  if (!__any_sync(0xffffffffu, r_lo != 1.f || r_hi != 1.f)) return;
#pragma unroll
  for (int j = 0; j < 32; ++j) {
    o[4 * j + 0] *= r_lo; o[4 * j + 1] *= r_lo;
    o[4 * j + 2] *= r_hi; o[4 * j + 3] *= r_hi;
  }
}

// V columns [256 half, 256 half + 256) as the MN-major B operand: 64-column tiles 1,024 B apart, 8-row groups
// group_stride apart (16 tokens = two groups per k-step).
__device__ __forceinline__ uint64_t desc_v_half(uint32_t stage, int half) {
  return smem_desc_sw128(stage + half * kRegionBytes, 1024, group_stride(0));
}

// O_half += P V_half, P from registers; V columns [256 half, 256 half + 256) = tiles 4 half .. 4 half + 3.
template <bool kBF16>
__device__ __forceinline__ void pv_issue_rs(float (&o)[128], const uint32_t (&pa)[16], uint32_t stage, int half) {
  const uint64_t dv = desc_v_half(stage, half);
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < kBlockN / 16; ++kk) {
    const uint32_t a[4] = {pa[4 * kk], pa[4 * kk + 1], pa[4 * kk + 2], pa[4 * kk + 3]};
    wgmma_m64n256k16_rs_tb<kBF16>(o, a, dv + ((kk * 2 * group_stride(0)) >> 4));
  }
  wgmma_commit();
}

// O_half += P V_half, P from the K-major tile `p_tile` in shared memory.
template <bool kBF16>
__device__ __forceinline__ void pv_issue_ss(float (&o)[128], uint32_t p_tile, uint32_t stage, int half) {
  const uint64_t dp = desc_k_major(p_tile), dv = desc_v_half(stage, half);
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < kBlockN / 16; ++kk)
    wgmma_m64n256k16_ss_tb<kBF16>(o, dp + ((kk * 32) >> 4), dv + ((kk * 2 * group_stride(0)) >> 4), 1);
  wgmma_commit();
}

__device__ __forceinline__ void wait_pv(float (&o)[128]) {
  wgmma_wait<0>();
  fence_accumulators(o);
}

// Per-row values one WG hands to the other: (running max, rescale) of rows row_lo and row_lo + 8.
__device__ __forceinline__ void publish_scale(float* s_max, float* s_scale, const RowState (&rs)[2],
                                              const float (&r)[2], int row_lo, int lane) {
  if ((lane & 3) == 0) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      s_max[row_lo + 8 * h] = rs[h].max2;
      s_scale[row_lo + 8 * h] = r[h];
    }
  }
}
__device__ __forceinline__ void read_scale(const float* s_max, const float* s_scale, RowState (&rs)[2],
                                           float (&r)[2], int row_lo) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    rs[h].max2 = s_max[row_lo + 8 * h];
    r[h] = s_scale[row_lo + 8 * h];
  }
}

// This WG is done with region g of a stage: one arrival per warp on the region's "empty" barrier; the producer
// refills the region once the phase completes.
__device__ __forceinline__ void release(uint32_t empty, int g, int t_in_wg) {
  if ((t_in_wg & 31) == 0) mbarrier_arrive(empty + 8 * g);
}

struct PairCtx {                  // what both WGs know about the current pair of blocks
  int blk0, blk1;
  bool has1;
  uint32_t par0, par1;
  int index;                      // pair count in this CTA (timeline probe only)
};

struct Smem {                     // shared-memory addresses and the per-row exchange arrays
  uint32_t q, stage0, stage1, p0, bars0, bars1, empty0, empty1, scale_copy;
  float *max0, *scale0, *max1, *scale1, *rowsum;
};

// WG0 side of one pair: owns block blk0 (stage 0) and O_L.
template <bool kBF16>
__device__ __forceinline__ void pair_wg0(const Chunk& c, const Smem& sm, const PairCtx& pc,
                                         float (&o)[128], RowState (&rs)[2], int row_lo, int lane, int t_in_wg,
                                         float scale_log2) {
  float s[32], r0[2], r1[2];
  uint32_t pa[16];
  FMLA_TRACE_EVENT(0, 0, pc.index);
  qk_block<kBF16, 0>(s, sm.q, sm.stage0, sm.bars0, pc.par0, pc.index);
  release(sm.empty0, 2, t_in_wg);                         // K0's RoPE tile is dead (P0 has its own tile)
  FMLA_TRACE_EVENT(0, 1, pc.index);
  softmax_max(s, rs, r0, pc.blk0 * kBlockN + 2 * (lane & 3), scale_log2);
  publish_scale(sm.max0, sm.scale0, rs, r0, row_lo, lane);   // WG1's softmax needs only m0 and r0
  named_barrier_arrive(kBarScale0, kThreads);
  // The exps' scale comes from shared memory after the arrive: ptxas otherwise hoists them above it.
  softmax_exp<kBF16>(s, pa, rs, r0, __int_as_float(ld_shared_at_use(sm.scale_copy)));
  fence_accumulators(o);                                  // keep the O rescale below the arrive
  FMLA_TRACE_EVENT(0, 2, pc.index);
  prepare_v(c, pc.blk0, sm.stage0, t_in_wg, kBarWG0);
  scale_o(o, r0[0], r0[1]);
  pv_issue_rs<kBF16>(o, pa, sm.stage0, 0);                 // O_L = O_L r0 + P0 V0_L
  named_barrier_sync_id(kBarScale1, kThreads);            // WG1's m1, r1 (r1 = 1 without a second block)
  FMLA_TRACE_EVENT(0, 3, pc.index);
  read_scale(sm.max1, sm.scale1, rs, r1, row_lo);
#pragma unroll
  for (int h = 0; h < 2; ++h) rs[h].sum *= r1[h];
  wait_pv(o);
  // P0 against m1 for WG1's half: rescale the fp32 probabilities and publish them in P0's tile.
#pragma unroll
  for (int i = 0; i < 16; ++i) pa[i] = pack2<kBF16>(s[2 * i] * r1[i & 1], s[2 * i + 1] * r1[i & 1]);
  store_p(pa, sm.p0, row_lo, lane);
  fence_proxy_async_smem();
  named_barrier_arrive(kBarP0Ready, kThreads);
  FMLA_TRACE_EVENT(0, 4, pc.index);
  release(sm.empty0, 0, t_in_wg);                         // V0_L is dead
  fence_accumulators(o);
  scale_o(o, r1[0], r1[1]);
  if (pc.has1) {
    named_barrier_sync_id(kBarP1Ready, kThreads);
    wait_tiles(sm.bars1, 0, 4, pc.par1);                  // V1_L landed (WG1 saw it; observe it here too)
    FMLA_TRACE_EVENT(0, 5, pc.index);
    pv_issue_ss<kBF16>(o, sm.stage1 + kPTile, sm.stage1, 0);   // O_L += P1 V1_L
    wait_pv(o);
    FMLA_TRACE_EVENT(0, 6, pc.index);
    release(sm.empty1, 0, t_in_wg);                       // V1_L and P1 are dead
    release(sm.empty1, 2, t_in_wg);
  }
}

// WG1 side of one pair: owns block blk1 (stage 1, if it exists) and O_R.
template <bool kBF16>
__device__ __forceinline__ void pair_wg1(const Chunk& c, const Smem& sm, const PairCtx& pc,
                                         float (&o)[128], RowState (&rs)[2], int row_lo, int lane, int t_in_wg,
                                         float scale_log2) {
  float s[32], r0[2], r1[2] = {1.f, 1.f};
  uint32_t pa[16];
  FMLA_TRACE_EVENT(1, 0, pc.index);
  if (pc.has1) qk_block<kBF16, 1>(s, sm.q, sm.stage1, sm.bars1, pc.par1, pc.index);
  FMLA_TRACE_EVENT(1, 1, pc.index);
  named_barrier_sync_id(kBarScale0, kThreads);
  FMLA_TRACE_EVENT(1, 2, pc.index);
  read_scale(sm.max0, sm.scale0, rs, r0, row_lo);
#pragma unroll
  for (int h = 0; h < 2; ++h) rs[h].sum *= r0[h];
  if (pc.has1) softmax_max(s, rs, r1, pc.blk1 * kBlockN + 2 * (lane & 3), scale_log2);
  publish_scale(sm.max1, sm.scale1, rs, r1, row_lo, lane);   // WG0 needs only m1 and r1 before P1
  named_barrier_arrive(kBarScale1, kThreads);
  // The exps stay below the arrive: the `if` ends the basic block, so ptxas does not hoist them.
  if (pc.has1) softmax_exp<kBF16>(s, pa, rs, r1, scale_log2);
  fence_accumulators(o);                                  // keep the O rescale below the arrive
  FMLA_TRACE_EVENT(1, 3, pc.index);
  scale_o(o, r0[0] * r1[0], r0[1] * r1[1]);
  if (pc.has1) {
    store_p(pa, sm.stage1 + kPTile, row_lo, lane);        // before the wgmma that reads pa from registers
    prepare_v(c, pc.blk1, sm.stage1, t_in_wg, kBarWG1);
    pv_issue_rs<kBF16>(o, pa, sm.stage1, 1);               // O_R = O_R r0 r1 + P1 V1_R
    fence_proxy_async_smem();                             // P1 for WG0's wgmma: the fence waits for the stores,
    named_barrier_arrive(kBarP1Ready, kThreads);          // so it comes after this warpgroup's own wgmma issue
    wait_pv(o);
    FMLA_TRACE_EVENT(1, 4, pc.index);
    release(sm.empty1, 1, t_in_wg);                       // V1_R is dead
  }
  named_barrier_sync_id(kBarP0Ready, kThreads);
  wait_tiles(sm.bars0, 4, 8, pc.par0);                    // V0_R landed (WG0 saw it; observe it here too)
  FMLA_TRACE_EVENT(1, 5, pc.index);
  pv_issue_ss<kBF16>(o, sm.p0, sm.stage0, 1);             // O_R += (P0 r1) V0_R
  wait_pv(o);
  FMLA_TRACE_EVENT(1, 6, pc.index);
  release(sm.empty0, 1, t_in_wg);                         // V0_R is dead (P0's tile is free again too)
}

// Producer warp of stage kSt (lane 0): every block of every chunk of this CTA that lands in the stage (even
// blocks of a chunk in stage 0, odd ones in stage 1), its three regions in the order the consumers release them.
// The stage is a template argument so that its addresses are `base` plus constants: the producer runs on 24
// registers, and every value it keeps live counts.
template <int kSt>
__device__ __forceinline__ void produce_stage(const KvMaps& maps, const DecodeParams& p, uint32_t base) {
  const uint32_t stage = base + (kSt ? kOffStage1 : kOffStage0), bars = base + kOffBars + kSt * 8 * kKTiles,
                 empty = base + kOffEmpty + kSt * 3 * 8, meta = base + kOffProducerMeta,
                 ids = base + kOffProducerIds + kSt * 16, cursor = base + kOffProducerCursor + kSt * 4;
  uint32_t uses = 0;                                      // blocks loaded into this stage (CTA lifetime)
  st_shared_s32(cursor, ld_shared_at_use(meta));
  for (;;) {
    const int pos = ld_shared_at_use(cursor);
    if (pos > ld_shared_at_use(meta + 8)) break;
    const Chunk c = chunk_with_shift(p, pos, ld_shared_at_use(meta), ld_shared_at_use(meta + 4),
                                     ld_shared_at_use(meta + 8), ld_shared_at_use(meta + 12), 0,
                                     ld_shared_at_use(meta + 16), ld_shared_at_use(meta + 20) != 0);
    st_shared_s32(cursor, pos + 1);                       // c.req, not pos, stays live across the block loop
    for (int blk = c.first + kSt; blk < c.last; blk += 2, ++uses) {
      fetch_box_page_ids(p, c, blk, ids);
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        // release order: stage 0 RoPE (after Q·Kᵀ0), V_L, V_R; stage 1 V_R, V_L, RoPE (which holds P1)
        const int g = kSt ? (k == 0 ? 1 : (k == 1 ? 0 : 2)) : (k == 0 ? 2 : k - 1);
        if (uses > 0) mbarrier_wait(empty + 8 * g, (uses - 1) & 1);
        if (k == 0) cp_async_wait<0>();                   // the ids, fetched while the region was busy
        issue_region(maps, p, blockIdx.y, blk, ids, stage, bars, g);
        FMLA_TRACE_AT(2, 3 * kSt + g, uses);
      }
    }
  }
}

template <bool kBF16>
__device__ void decode_cta(const KvMaps& maps, const DecodeParams& p) {
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  const uint32_t raw = smem_u32(smem_raw), base = (raw + 1023u) & ~1023u;
  uint8_t* smem = smem_raw + (base - raw);
  Smem sm;
  sm.q = base + kOffQ;
  sm.stage0 = base + kOffStage0;
  sm.stage1 = base + kOffStage1;
  sm.p0 = base + kOffP0;
  sm.bars0 = base + kOffBars;
  sm.bars1 = sm.bars0 + 8 * kKTiles;
  sm.empty0 = base + kOffEmpty;
  sm.empty1 = sm.empty0 + 3 * 8;
  sm.max0 = reinterpret_cast<float*>(smem + kOffMax0);
  sm.scale0 = reinterpret_cast<float*>(smem + kOffScale0);
  sm.max1 = reinterpret_cast<float*>(smem + kOffMax1);
  sm.scale1 = reinterpret_cast<float*>(smem + kOffScale1);
  sm.rowsum = reinterpret_cast<float*>(smem + kOffRowSum);
  sm.scale_copy = base + kOffScaleCopy;

  const int tid = threadIdx.x, t_in_wg = tid & 127, lane = tid & 31;
  const int wg = __shfl_sync(0xffffffffu, tid / 128, 0);  // warp-uniform by construction
  const int m_block = blockIdx.x, hk = blockIdx.y;
  const int* meta = p.sched_meta + blockIdx.z * 8;
  allow_dependent_launch();   // the combine's CTAs may be placed as this grid's SMs free up (mla_combine.cu)

  if (tid == 0) {
    prefetch_tma_desc(maps.v);
    prefetch_tma_desc(maps.rope);
    for (int i = 0; i < 2 * kKTiles; ++i) mbarrier_init(sm.bars0 + 8 * i, 1);
    for (int i = 0; i < 6; ++i) mbarrier_init(sm.empty0 + 8 * i, 4);   // the 4 warps of the releasing WG
    int* producer_meta = reinterpret_cast<int*>(smem + kOffProducerMeta);
    for (int i = 0; i < 4; ++i) producer_meta[i] = __ldg(meta + i);
    producer_meta[4] = tile_key_shift(p, m_block);
    producer_meta[5] = __ldg(meta + 5);
    *reinterpret_cast<float*>(smem + kOffScaleCopy) = (float)p.scale_log2;
    fence_mbarrier_init();
  }
  __syncthreads();
  FMLA_TRACE_CTA(0);
  if (wg == 2) {
    setmaxnreg_dec<kProducerRegs>();
    if (t_in_wg == 0) produce_stage<0>(maps, p, base);
    else if (t_in_wg == 32) produce_stage<1>(maps, p, base);
    return;
  }
  setmaxnreg_inc<kConsumerRegs>();

  const int row_lo = 16 * (t_in_wg / 32) + lane / 4;
  const int load_row = tid / 4, load_sub = tid % 4;
  const int begin_pos = __ldg(meta + 0), begin_blk = __ldg(meta + 1), end_pos = __ldg(meta + 2),
            end_blk = __ldg(meta + 3), begin_split = __ldg(meta + 4);
  const bool reordered = __ldg(meta + 5) != 0;
  const float scale_log2 = (float)p.scale_log2;
  uint32_t loads0 = 0, loads1 = 0;                        // blocks loaded into each stage (CTA lifetime)
  int pairs = 0;

  for (int pos = begin_pos; pos <= end_pos; ++pos) {
    const Chunk c = chunk_of(p, pos, begin_pos, begin_blk, end_pos, end_blk, begin_split, m_block, reordered);
    const int n = c.last - c.first;
    RowState rs[2];
    init_rows(rs, p, c, m_block, row_lo);
    float o[128];
#pragma unroll
    for (int i = 0; i < 128; ++i) o[i] = 0.f;

    if (n > 0) {
      load_q_tile_async(p, sm.q, c.req, m_block, hk, load_row, load_sub);   // the producer is already loading KV
      cp_async_commit();
      FMLA_TRACE_CHUNK(pos - begin_pos, 0);
      cp_async_wait<0>();
      fence_proxy_async_smem();
      named_barrier_sync_id(kBarConsumers, kThreads);
      FMLA_TRACE_CHUNK(pos - begin_pos, 1);
      for (int i = 0; i < n; i += 2) {
        PairCtx pc;
        pc.blk0 = c.first + i;
        pc.blk1 = pc.blk0 + 1;
        pc.has1 = i + 1 < n;
        pc.par0 = loads0 & 1;
        pc.par1 = loads1 & 1;
        pc.index = pairs++;
        if (wg == 0)
          pair_wg0<kBF16>(c, sm, pc, o, rs, row_lo, lane, t_in_wg, scale_log2);
        else
          pair_wg1<kBF16>(c, sm, pc, o, rs, row_lo, lane, t_in_wg, scale_log2);
        loads0 += 1;
        loads1 += pc.has1;
      }
    }
    FMLA_TRACE_CTA(2);
    FMLA_TRACE_CHUNK(pos - begin_pos, 2);
    FMLA_TRACE_CHUNK_CUR(pos - begin_pos);
    store_chunk<kBF16>(p, c, o, rs, sm.rowsum, wg, lane, row_lo, hk, kBarRowSum, sm.q, t_in_wg, kBarWG0 + wg);
    named_barrier_sync_id(kBarConsumers, kThreads);      // Q and row sums are reused by the next chunk
    FMLA_TRACE_CHUNK(pos - begin_pos, 3);
  }
  FMLA_TRACE_CTA(1);
}

}  // namespace seesaw
}  // namespace fmla

#define FMLA_SEESAW_ENTRY(NAME, BF16)                                                                       \
  extern "C" __global__ void __launch_bounds__(fmla::seesaw::kThreadsWithProducer, 1)                      \
      NAME(const __grid_constant__ fmla::TmaDesc kv_v, const __grid_constant__ fmla::TmaDesc kv_rope,        \
           const __grid_constant__ fmla::DecodeParams p) {                                                   \
    fmla::seesaw::decode_cta<BF16>(fmla::seesaw::KvMaps{&kv_v, &kv_rope}, p);                               \
  }
FMLA_SEESAW_ENTRY(mla_decode_bf16, true)
FMLA_SEESAW_ENTRY(mla_decode_fp16, false)
