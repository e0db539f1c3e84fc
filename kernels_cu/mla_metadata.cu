// Split-KV schedule on the device: one warp, no host sync, so a decode step can live in a CUDA graph.
// Same algorithm and output as flashmla_rt/schedule.py (its docstring defines the metadata layout):
// each part gets a budget of ceil(total / parts) + kFixedOverhead, where a chunk of a request costs
// (64-token blocks) + kFixedOverhead; requests are taken in order and cut where a budget runs out.
#include "common/nvrtc_shim.cuh"

namespace fmla {
constexpr int kBlockTokens = 64;
constexpr int kFixedOverhead = 5;

__device__ __forceinline__ int blocks_of(int seqlen) { return (max(seqlen, 0) + kBlockTokens - 1) / kBlockTokens; }
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
  if (lane != 0) return;

  const long long payload = (total + num_parts - 1) / num_parts + kFixedOverhead;
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
        if (take > 0) {
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
