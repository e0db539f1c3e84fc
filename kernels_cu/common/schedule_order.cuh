// The request order carried by the split-KV metadata (flashmla_rt/schedule.py's docstring is the layout): when
// column 5 of the [parts, 8] rows is 1 (a best-fit plan), columns 6-7 of all rows hold the request id at each
// position as uint16 (position k: row k / 4, bytes 24 + 2 (k % 4) of the row); parts walk positions. When it is
// 0, position k is request k.
#pragma once
#include "nvrtc_shim.cuh"

namespace fmla {
constexpr int kOrderIdsPerRow = 4;
constexpr int kReorderMaxBatch = 256;
#ifdef FMLA_EXPECT_REORDER_MAX_BATCH
static_assert(kOrderIdsPerRow == FMLA_EXPECT_ORDER_IDS_PER_ROW, "schedule.ORDER_IDS_PER_ROW differs");
static_assert(kReorderMaxBatch == FMLA_EXPECT_REORDER_MAX_BATCH, "schedule.REORDER_MAX_BATCH differs");
#endif

// Byte offset in the metadata of position k's uint16 id (shifts only: the seesaw's producer has 24 registers).
__device__ __forceinline__ int order_offset(int k) { return ((k >> 2) << 5) + 24 + ((k & 3) << 1); }

// The request at position `pos`; `reordered`: column 5 of the part's row. An id is clamped to the batch, so that
// metadata planned for another batch still never indexes past this one's tensors.
__device__ __forceinline__ int request_at(const int* meta, int batch, bool reordered, int pos) {
  if (!reordered) return pos;
  const int id = __ldg(reinterpret_cast<const unsigned short*>(reinterpret_cast<const char*>(meta) + order_offset(pos)));
  return min(id, batch - 1);
}
}  // namespace fmla
