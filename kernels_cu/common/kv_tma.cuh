// Page ids of one 64-token KV block, as the decode kernels' TMA loads use them (each kernel issues its own boxes
// through its row-walking tensor maps, kernels.py _row_walk_map).
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

// A page id from the table is never trusted: one outside the cache becomes num_cache_blocks (TMA zero-fills).
__device__ __forceinline__ int sanitize_page_id(const DecodeParams& p, int v) {
  return (v >= 0 && v < p.num_cache_blocks) ? v : (int)p.num_cache_blocks;
}

// TMA boxes of 64-token block `blk`: min(page, 64) token rows each, 64 / box_rows of them, starting at 8-token
// group group0 of the first page (0 when page <= 64).
struct BoxGeometry { int box_rows, boxes, group0; };
__device__ __forceinline__ BoxGeometry box_geometry(const DecodeParams& p, int blk) {
  const int page = 1 << (int)p.page_shift, box_rows = min(page, kBlockN);
  return {box_rows, kBlockN / box_rows, ((blk * kBlockN) & (page - 1)) >> 3};
}

// Page ids as used by the TMA: ids from the table are never trusted, garbage ones become out of range.
template <typename Ids>
__device__ __forceinline__ void sanitize_page_ids(const DecodeParams& p, const Ids& ids, int (&id)[4]) {
#pragma unroll
  for (int bx = 0; bx < 4; ++bx) {
    id[bx] = sanitize_page_id(p, ids[bx]);
  }
}

}  // namespace fmla
