// Split-KV schedule on the device: one warp, no host sync, so a decode step can live in a CUDA graph.
// Same algorithm and output as flashmla_rt/schedule.py (its docstring defines the metadata layout):
// each part gets a budget of ceil(total / parts) + kFixedOverhead, where a chunk of a request costs
// (64-token blocks) + kFixedOverhead; requests are taken in order and cut where a budget runs out.
// Unless a budget at most kNoCutSlackPercent larger keeps every request whole: then nothing is cut (the 32 lanes
// try 32 budgets at once), since a cut costs an fp32 partial and the combine's merge besides the overhead.
#include "common/nvrtc_shim.cuh"

namespace fmla {
constexpr int kBlockTokens = 64;
#ifndef FMLA_CHUNK_OVERHEAD
#define FMLA_CHUNK_OVERHEAD 5     // experiments only: a different value breaks the twin (schedule.FIXED_OVERHEAD)
#endif
constexpr int kFixedOverhead = FMLA_CHUNK_OVERHEAD;
constexpr int kNoCutSlackPercent = 3;
#ifdef FMLA_EXPECT_CHUNK_OVERHEAD
static_assert(kFixedOverhead == FMLA_EXPECT_CHUNK_OVERHEAD, "schedule.FIXED_OVERHEAD differs from kFixedOverhead");
static_assert(kNoCutSlackPercent == FMLA_EXPECT_NO_CUT_SLACK, "schedule.NO_CUT_SLACK_PERCENT differs");
static_assert(kBlockTokens == FMLA_EXPECT_BLOCK_N, "schedule.BLOCK_N differs from kBlockTokens");
#endif

__device__ __forceinline__ int blocks_of(int seqlen) { return (max(seqlen, 0) + kBlockTokens - 1) / kBlockTokens; }

// Whether `parts` parts of `budget` each hold every request whole (greedy, in order).
__device__ bool whole_requests_fit(const int* __restrict__ seqlens, int batch, int parts, long long budget) {
  int used = 1;
  long long load = 0;
  for (int i = 0; i < batch; ++i) {
    const long long cost = blocks_of(seqlens[i]) + kFixedOverhead;
    if (cost > budget) return false;
    if (load + cost > budget) {
      if (++used > parts) return false;
      load = 0;
    }
    load += cost;
  }
  return true;
}

// The smallest of 32 budgets in [payload, payload + slack] (lane i tries payload + i * step) that keeps every
// request whole, or -1: the same candidates as schedule.no_cut_budget.
__device__ long long no_cut_budget(const int* __restrict__ seqlens, int batch, int parts, long long payload) {
  const int lane = threadIdx.x;
  const long long slack = payload * kNoCutSlackPercent / 100;
  const long long step = max(1LL, (slack + 30) / 31);
  const long long budget = payload + lane * step;
  const bool fits = lane * step <= slack && whole_requests_fit(seqlens, batch, parts, budget);
  const unsigned hits = __ballot_sync(0xffffffffu, fits);
  return hits ? payload + (__ffs(hits) - 1) * step : -1;
}
}  // namespace fmla

extern "C" __global__ void __launch_bounds__(32) mla_metadata(const int* __restrict__ seqlens, int batch,
                                                               int num_parts, int* __restrict__ meta,
                                                               int* __restrict__ num_splits) {
  using namespace fmla;
  const int lane = threadIdx.x;
  long long total = 0;                                     // sum of (blocks + overhead) over requests
  for (int i = lane; i < batch; i += 32) total += blocks_of(seqlens[i]) + kFixedOverhead;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) total += __shfl_xor_sync(0xffffffffu, total, o);
  const long long even_payload = (total + num_parts - 1) / num_parts + kFixedOverhead;
  const long long whole_budget = no_cut_budget(seqlens, batch, num_parts, even_payload);
  if (lane != 0) return;

  const bool cut = whole_budget < 0;
  const long long payload = cut ? even_payload : whole_budget;
  int req = 0, blk = 0, split = 0, cum = 0;
  num_splits[0] = 0;
  for (int part = 0; part < num_parts; ++part) {
    const int begin_req = req, begin_blk = blk, begin_split = split;
    long long budget = payload;
    int end_req = -1, end_blk = 0;
    while (req < batch) {
      const int n = blocks_of(seqlens[req]);
      const long long remaining = n - blk;
      if (remaining + kFixedOverhead <= budget) {          // the rest of this request fits
        budget -= remaining + kFixedOverhead;
        end_req = req;
        end_blk = n;
        cum += split + 1;
        num_splits[req + 1] = cum;
        ++req;
        blk = 0;
        split = 0;
      } else {                                             // cut: take what the budget allows
        const long long take = budget - kFixedOverhead;
        if (take > 0 && cut) {
          end_req = req;
          blk += (int)take;
          end_blk = blk;
          ++split;
        }
        break;
      }
    }
    int* row = meta + part * 8;
    const bool empty = end_req < 0;
    row[0] = empty ? batch : begin_req;
    row[1] = empty ? 0 : begin_blk;
    row[2] = end_req;
    row[3] = empty ? 0 : end_blk;
    row[4] = empty ? 0 : begin_split;
    row[5] = row[6] = row[7] = 0;
  }
}
