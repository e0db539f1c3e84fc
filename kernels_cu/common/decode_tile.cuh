// Decode-kernel pieces kept apart from its schedule: tile geometry, the cp.async Q gather, a CTA's view of one request
// chunk (split-KV schedule + causal trimming), per-row softmax state and the epilogue that writes out/lse
// (or the split partials).
#pragma once
#include "nvrtc_shim.cuh"
#include "ptx_async.cuh"
#include "ptx_tma.cuh"
#include "softmax.cuh"
#include "decode_params.cuh"
#include "schedule_order.cuh"

// Timeline hook inside the epilogue: the seesaw kernel's trace build defines it before including this file
// (mla_decode_sm90.cu, -DFMLA_TRACE=1); a no-op everywhere else.
#ifndef FMLA_EPILOGUE_MARK
#define FMLA_EPILOGUE_MARK(e) do {} while (0)
#endif

namespace fmla {

constexpr int kBlockM = 64;                         // query rows per CTA
constexpr int kBlockN = 64;                         // KV tokens per block
[[maybe_unused]] constexpr int kThreads = 256;      // two warpgroups (seesaw kernel)
constexpr int kTileBytes = 64 * 128;                // 64 rows x 64 16-bit values (128 B): one swizzle tile
constexpr int kKTiles = kHeadDimK / 64;             // 9 column tiles per 576-wide row (8 of V + 1 RoPE)
[[maybe_unused]] constexpr int kRowTileBytes = kKTiles * kTileBytes; // 73,728 B: 64 rows x 576

// Each of the 4 threads of a row copies chunks {sub, sub+4} of each of the 9 column tiles (18 x 16 B), so one
// instruction of a warp moves 8 rows x 64 contiguous bytes (whole 32-B sectors). The swizzled destination
// depends only on (row, sub), so per tile it is a constant offset from two bases.
// src == nullptr zero-fills the row (cp.async with 0 source bytes reads nothing).
// kTileStride: bytes between the 9 column tiles (64 rows x 128 B in the seesaw kernel; N rows in the narrow one).
template <int kTileStride = kTileBytes>
__device__ __forceinline__ void load_row_async(uint32_t buf, int row, int sub, const uint8_t* src,
                                               const void* any_valid_ptr) {
  const uint32_t n = src ? 16u : 0u;
  const uint8_t* s = src ? src + 16 * sub : (const uint8_t*)any_valid_ptr;
  const int64_t step = src ? 1 : 0;
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const uint32_t dst = buf + row * 128 + (((sub + 4 * e) ^ (row & 7)) << 4);
#pragma unroll
    for (int t = 0; t < kKTiles; ++t) cp_async_16(dst + t * kTileStride, s + step * (t * 128 + e * 64), n);
  }
}

// Q rows of this CTA's m-block for one request: row r = s * ngroups + g of KV head hk (zeros past `rows`).
template <int kTileStride = kTileBytes>
__device__ __forceinline__ void load_q_tile_async(const DecodeParams& p, uint32_t sQ, int req, int m_block,
                                                  int hk, int load_row, int load_sub) {
  const uint8_t* q = static_cast<const uint8_t*>(p.q);
  const int r = m_block * kBlockM + load_row;
  const uint8_t* src = nullptr;
  if (r < p.rows) {
    const int s = r / (int)p.ngroups, h = hk * (int)p.ngroups + r % (int)p.ngroups;
    src = q + 2 * (req * p.q_stride_b + s * p.q_stride_s + h * p.q_stride_h);
  }
  load_row_async<kTileStride>(sQ, load_row, load_sub, src, q);
}

// Zero V rows [valid, 64) of tiles 0..7 (the sequence ends inside this block; TMA loaded what follows it);
// row_offset(r, t): byte offset of token row r of tile t in the kernel's stage layout.
template <int kNumThreads, typename RowOffset>
__device__ __forceinline__ void zero_v_tail(uint32_t stage, int valid, int tid, RowOffset row_offset) {
  const int per_tile = (kBlockN - valid) * 8;             // 16-B chunks per tile
  for (int i = tid; i < 8 * per_tile; i += kNumThreads) {
    const int tile = i / per_tile, rem = i % per_tile;
    const uint32_t addr = stage + row_offset(valid + rem / 8, tile) + (rem % 8) * 16;
    asm volatile("st.shared.v4.b32 [%0], {%1, %1, %1, %1};\n" ::"r"(addr), "r"(0) : "memory");
  }
}

// 64-token blocks that hold `seqlen` keys (none for seqlen <= 0).
__device__ __forceinline__ int blocks_of(int seqlen) { return (max(seqlen, 0) + kBlockN - 1) / kBlockN; }

// The part of request `req` that this CTA decodes, from the schedule row of its part (mla_metadata.cu).
struct Chunk {
  int req, seqlen;
  int first, last;          // 64-token blocks [first, last), already trimmed by the causal limit of the tile
  int split_idx;            // slot in the split workspace
  bool is_split;            // request has more than one chunk: write a partial, the combine kernel merges
};

__device__ __forceinline__ int key_limit(const DecodeParams& p, int seqlen, int packed_row) {
  if (!p.causal || packed_row >= p.rows) return seqlen;
  return seqlen - ((int)p.s_q - 1 - packed_row / (int)p.ngroups);   // bottom-right aligned
}

// Keys the causal mask takes off the end of a sequence for the last valid row of tile m_block (0 if not causal):
// no row of the tile attends to them.
__device__ __forceinline__ int tile_key_shift(const DecodeParams& p, int m_block) {
  return -key_limit(p, 0, min((int)p.rows, (m_block + 1) * kBlockM) - 1);
}

// Positions begin_pos..end_pos of the schedule's request order (common/schedule_order.cuh) are this part's;
// `reordered`: column 5 of its row.
__device__ __forceinline__ Chunk chunk_with_shift(const DecodeParams& p, int pos, int begin_pos, int begin_blk,
                                                  int end_pos, int end_blk, int begin_split, int key_shift,
                                                  bool reordered) {
  Chunk c;
  const int req = request_at(p.sched_meta, (int)p.batch, reordered, pos);
  c.req = req;
  c.seqlen = __ldg(p.seqlens + req);
  c.first = (pos == begin_pos) ? begin_blk : 0;
  c.last = (pos == end_pos) ? end_blk : (c.seqlen + kBlockN - 1) / kBlockN;
  const int split0 = __ldg(p.num_splits + req);
  c.is_split = __ldg(p.num_splits + req + 1) - split0 > 1;
  c.split_idx = split0 + ((pos == begin_pos) ? begin_split : 0);
  c.last = min(c.last, blocks_of(c.seqlen - key_shift));   // skip fully masked blocks
  return c;
}

__device__ __forceinline__ Chunk chunk_of(const DecodeParams& p, int pos, int begin_pos, int begin_blk,
                                          int end_pos, int end_blk, int begin_split, int m_block, bool reordered) {
  return chunk_with_shift(p, pos, begin_pos, begin_blk, end_pos, end_blk, begin_split, tile_key_shift(p, m_block),
                          reordered);
}

// Row of the split workspace (o_accum, lse_accum) that chunk `c` writes for packed row r of KV head hk.
__device__ __forceinline__ int64_t accum_row(const DecodeParams& p, const Chunk& c, int hk, int rows, int r) {
  return ((int64_t)c.split_idx * p.h_kv + hk) * rows + r;
}

struct RowState {          // one accumulator row of this thread (rows lo and hi of the wgmma fragment)
  int packed_row;          // r within [0, rows); >= rows means padding
  int key_limit;           // keys [0, key_limit) are attendable (causal bottom-right)
  float max2;              // running max, log2 units (scores * scale * log2e)
  float sum;               // this thread's partial row sum; quad/WG-reduced at the end
};

__device__ __forceinline__ void init_rows(RowState (&rs)[2], const DecodeParams& p, const Chunk& c, int m_block,
                                          int row_lo) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    rs[h].packed_row = m_block * kBlockM + row_lo + 8 * h;
    rs[h].key_limit = key_limit(p, c.seqlen, rs[h].packed_row);
    rs[h].max2 = kMaxInit;
    rs[h].sum = 0.f;
  }
}

// The 16-bit out rows of a chunk through shared memory. WG `wg` writes its 64 x 256 half of O / sum into `staging`
// (the Q region: dead once the chunk's last Q·Kᵀ has completed, in both warpgroups), 512 B per row with the 16-B
// chunks XOR-swizzled by row (the fragment's stores hit 8 rows at once; unswizzled, all 8 share banks), then each
// warp stores whole row halves: 512 contiguous bytes of out per instruction, 16 B a lane. Stored straight from the
// fragment, each instruction wrote 4 B a lane to 8 rows (16 of each 32-B sector). Rows >= rows are padding.
template <bool kBF16>
__device__ __forceinline__ void store_out_rows(const DecodeParams& p, const Chunk& c, const float (&o)[128],
                                               const float (&inv)[2], int base_row, uint32_t staging, int wg,
                                               int t_in_wg, int row_lo, int hk, int wg_barrier) {
  const uint32_t half = staging + wg * (kBlockM * 512);
  const int lane = t_in_wg & 31;
  // stmatrix, two 16-B chunks (2 q, 2 q + 1) of both fragment rows a call: lane group i = lane / 8 addresses row
  // (its warp's first row) + lane % 8 + 8 (i & 1), chunk 2 q + (i >> 1). The same expression as store_p's in
  // mla_decode_sm90.cu, kept inline in both (see there).
  const int srow = (row_lo - lane / 4) + (lane & 7) + 8 * ((lane >> 3) & 1), hi = lane >> 4;
#pragma unroll
  for (int q = 0; q < 16; ++q) {
    uint32_t v[4];
#pragma unroll
    for (int m = 0; m < 4; ++m) {
      const int h = m & 1, j = 2 * q + (m >> 1);
      v[m] = pack2<kBF16>(o[4 * j + 2 * h] * inv[h], o[4 * j + 2 * h + 1] * inv[h]);
    }
    stmatrix_x4(half + srow * 512 + (((2 * q + hi) ^ (srow & 7)) << 4), v[0], v[1], v[2], v[3]);
  }
  named_barrier_sync_id(wg_barrier, 128);
  const int rows = (int)p.rows, ngroups = (int)p.ngroups;
  for (int r = t_in_wg / 32; r < kBlockM; r += 4) {
    const int pr = base_row + r;
    if (pr >= rows) break;                                     // padding rows come last
    const int s = pr / ngroups, head = hk * ngroups + pr % ngroups;
    const uint4 v = ld_shared_v4(half + r * 512 + ((lane ^ (r & 7)) << 4));
    uint8_t* dst = static_cast<uint8_t*>(p.out) + 2 * out_row_offset(p, c.req, s, head) + 512 * wg + 16 * lane;
    *reinterpret_cast<uint4*>(dst) = v;
  }
}

// The fp32 partial rows of a split chunk (o_accum) through shared memory, in two rounds of 32 rows (the fragment's
// rows row_lo, then row_lo + 8): WG `wg` writes its 32 x 256 fp32 of the round into `staging` (its 32 KB half of
// the Q region), 1 KB per row with the 32-B chunks XOR-swizzled by row (a fragment store hits 8 rows at once), then
// each warp stores whole row halves, 512 contiguous bytes per instruction, 16 B a lane. Stored straight from the
// fragment, each instruction wrote 8 B a lane, 32 B to each of 8 rows. Rows >= rows are padding.
__device__ __forceinline__ void store_partial_rows(const DecodeParams& p, const Chunk& c, const float (&o)[128],
                                                   const float (&inv)[2], int base_row, uint32_t staging, int wg,
                                                   int t_in_wg, int row_lo, int hk, int wg_barrier) {
  const uint32_t half = staging + wg * (32 * 1024);
  const int lane = t_in_wg & 31, rows = (int)p.rows;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (h) named_barrier_sync_id(wg_barrier, 128);           // round 0's rows are out of `staging`
    const int slot = (row_lo & ~15) / 2 + (row_lo & 7);      // this round's 32 rows: 8 per warp
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      const uint32_t addr = half + slot * 1024 + ((j ^ (slot & 7)) << 5) + 8 * (lane & 3);
      asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(addr), "f"(o[4 * j + 2 * h] * inv[h]),
                   "f"(o[4 * j + 2 * h + 1] * inv[h]) : "memory");
    }
    named_barrier_sync_id(wg_barrier, 128);
    for (int k = t_in_wg / 32; k < 2 * 32; k += 4) {        // 64 row halves of 512 B, 16 per warp
      const int sl = k >> 1, hf = k & 1;
      const int pr = base_row + 16 * (sl >> 3) + (sl & 7) + 8 * h;
      if (pr >= rows) continue;
      const uint4 v = ld_shared_v4(half + sl * 1024 + (((16 * hf + lane / 2) ^ (sl & 7)) << 5) + 16 * (lane & 1));
      float* dst = p.o_accum + accum_row(p, c, hk, rows, pr) * kHeadDimV + 256 * wg + 128 * hf + 4 * lane;
      *reinterpret_cast<uint4*>(dst) = v;
    }
  }
}

// Epilogue of a chunk. WG `wg` holds O[:, 256wg : 256wg+256] of its two rows and a partial row sum; both WGs
// hold the same running max. Sums are combined through s_rowsum [2][64], then O / sum is stored (16-bit to
// `out`, or fp32 to the split workspace) with the LSE (natural log; +inf / -inf for rows with no key).
// Both go through shared memory (store_out_rows, store_partial_rows: `staging`, and `wg_barrier` for this warpgroup alone).
template <bool kBF16>
__device__ __forceinline__ void store_chunk(const DecodeParams& p, const Chunk& c, const float (&o)[128],
                                            RowState (&rs)[2], float* s_rowsum, int wg, int lane, int row_lo,
                                            int hk, int rowsum_barrier, uint32_t staging, int t_in_wg,
                                            int wg_barrier) {
#pragma unroll
  for (int h = 0; h < 2; ++h) rs[h].sum = quad_sum(rs[h].sum);
  if ((lane & 3) == 0) {
    s_rowsum[wg * kBlockM + row_lo] = rs[0].sum;
    s_rowsum[wg * kBlockM + row_lo + 8] = rs[1].sum;
  }
  named_barrier_sync_id(rowsum_barrier, kThreads);
  FMLA_EPILOGUE_MARK(4);
  float inv[2], lse2[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float total = rs[h].sum + s_rowsum[(wg ^ 1) * kBlockM + row_lo + 8 * h];
    inv[h] = (total > 0.f) ? 1.f / total : 0.f;     // empty (or NaN) row -> output 0
    lse2[h] = row_lse2(rs[h].max2, total);
  }
  const int rows = (int)p.rows, ngroups = (int)p.ngroups;
  if (!c.is_split) {
    store_out_rows<kBF16>(p, c, o, inv, rs[0].packed_row - row_lo, staging, wg, t_in_wg, row_lo, hk, wg_barrier);
    FMLA_EPILOGUE_MARK(5);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = rs[h].packed_row;
      if (r >= rows || wg != 0 || (lane & 3) != 0) continue;
      const int s = r / ngroups, head = hk * ngroups + r % ngroups;
      // lse_natural(lse2[h]), written out: the call reorders two parameter loads in the measured PTX
      p.lse[lse_index(p, c.req, s, head)] = (lse2[h] == neg_inf()) ? pos_inf() : lse2[h] * 0.69314718056f;
    }
    return;
  }
  store_partial_rows(p, c, o, inv, rs[0].packed_row - row_lo, staging, wg, t_in_wg, row_lo, hk, wg_barrier);
  FMLA_EPILOGUE_MARK(5);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = rs[h].packed_row;
    if (r < rows && wg == 0 && (lane & 3) == 0) p.lse_accum[accum_row(p, c, hk, rows, r)] = lse2[h];
  }
}

}  // namespace fmla
