// TMA loads of one 64-token KV block from the paged cache: its page ids and the 9 tile copies. Shared by the
// decode kernels; the tensor map is 4-D (576, h_kv, page, num_blocks), box 64 x 1 x min(page, 64) x 1.
#pragma once
#include "nvrtc_shim.cuh"
#include "ptx_tma.cuh"
#include "decode_tile.cuh"

namespace fmla {

// Page ids of the (up to 4) TMA boxes of block `blk`, read straight from the block table. Boxes past the
// sequence or the table get an out-of-range id, for which TMA zero-fills.
__device__ __forceinline__ void block_page_ids(const DecodeParams& p, const Chunk& c, int blk, int (&ids)[4]) {
  const int page_shift = (int)p.page_shift, box_rows = min(1 << page_shift, kBlockN);
#pragma unroll
  for (int bx = 0; bx < 4; ++bx) {
    const int tok = blk * kBlockN + bx * box_rows, pg = tok >> page_shift;
    ids[bx] = (bx * box_rows < kBlockN && tok < c.seqlen && pg < p.bt_width)
                  ? __ldg(p.block_table + c.req * p.bt_stride + pg) : (int)p.num_cache_blocks;
  }
}

// Page ids as used by the TMA: ids from the table are never trusted, garbage ones become out of range.
template <typename Ids>
__device__ __forceinline__ void sanitize_page_ids(const DecodeParams& p, const Ids& ids, int (&id)[4]) {
#pragma unroll
  for (int bx = 0; bx < 4; ++bx) {
    const int v = ids[bx];
    id[bx] = (v >= 0 && v < p.num_cache_blocks) ? v : (int)p.num_cache_blocks;
  }
}

// TMA load of column tile t of 64-token block `blk` (64 tokens x 64 dims, 8 KB) into `dst`, completing on `bar`;
// `id` from sanitize_page_ids. One thread.
__device__ __forceinline__ void issue_tile(const TmaDesc* map, const DecodeParams& p, const int (&id)[4], int hk,
                                           int blk, int t, uint32_t dst, uint32_t bar) {
  const int page_shift = (int)p.page_shift, page = 1 << page_shift;
  const int box_rows = min(page, kBlockN), boxes = kBlockN / box_rows;
  const int tok_in_page = (blk * kBlockN) & (page - 1);   // 0 when page <= 64
  mbarrier_arrive_expect_tx(bar, kTileBytes);              // boxes sum to one 64x64 tile, zero-filled or not
#pragma unroll
  for (int bx = 0; bx < 4; ++bx)
    if (bx < boxes) tma_load_4d(dst + bx * box_rows * 128, map, 64 * t, hk, tok_in_page, id[bx], bar);
}

// TMA loads of tiles t0, t0 + step, ... < t1 of block `blk` into a stage (tile t at t * kTileBytes, completing
// on mbarrier bars + 8 t); `ids` holds the block's page ids (registers or shared memory). One thread.
template <typename Ids>
__device__ __forceinline__ void issue_block_tiles(const TmaDesc* map, const DecodeParams& p, const Ids& ids,
                                                  int hk, int blk, uint32_t stage, uint32_t bars, int t0, int t1,
                                                  int step = 1) {
  int id[4];
  sanitize_page_ids(p, ids, id);
  for (int t = t0; t < t1; t += step) issue_tile(map, p, id, hk, blk, t, stage + t * kTileBytes, bars + 8 * t);
}

}  // namespace fmla
