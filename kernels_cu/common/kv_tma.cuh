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

// Page ids as used by the TMA: ids from the table are never trusted, garbage ones become out of range.
template <typename Ids>
__device__ __forceinline__ void sanitize_page_ids(const DecodeParams& p, const Ids& ids, int (&id)[4]) {
#pragma unroll
  for (int bx = 0; bx < 4; ++bx) {
    const int v = ids[bx];
    id[bx] = (v >= 0 && v < p.num_cache_blocks) ? v : (int)p.num_cache_blocks;
  }
}

}  // namespace fmla
