// Walks a split-KV schedule the way the decode kernels' loops do (over positions of the plan's request order,
// common/schedule_order.cuh), with their own chunk_of (kernels_cu/common/decode_tile.cuh): for every part
// (grid.z) and m-block, each chunk's request, blocks [first, last) after the causal trim, split slot and is_split.
// stdin: "batch parts s_q ngroups causal", the batch lengths, the [parts, 8] metadata, the batch + 1 num_splits;
// stdout: one chunk per line, "part m_block req first last split_idx is_split".
#include <cstdio>
#include <vector>
#include "decode_tile.cuh"

int main() {
  long long batch, parts, s_q, ngroups, causal;
  if (std::scanf("%lld %lld %lld %lld %lld", &batch, &parts, &s_q, &ngroups, &causal) != 5) return 2;
  std::vector<int> seqlens(batch), meta(parts * 8), num_splits(batch + 1);
  for (int& v : seqlens) if (std::scanf("%d", &v) != 1) return 2;
  for (int& v : meta) if (std::scanf("%d", &v) != 1) return 2;
  for (int& v : num_splits) if (std::scanf("%d", &v) != 1) return 2;
  fmla::DecodeParams p{};
  p.seqlens = seqlens.data();
  p.sched_meta = meta.data();
  p.num_splits = num_splits.data();
  p.batch = batch;
  p.s_q = s_q;
  p.ngroups = ngroups;
  p.rows = s_q * ngroups;
  p.causal = causal;
  const int m_blocks = (int)((p.rows + fmla::kBlockM - 1) / fmla::kBlockM);
  for (int z = 0; z < parts; ++z)
    for (int m = 0; m < m_blocks; ++m) {
      const int* row = p.sched_meta + 8 * z;       // as the kernels read their part's row
      const int begin_pos = row[0], begin_blk = row[1], end_pos = row[2], end_blk = row[3], begin_split = row[4];
      const bool reordered = row[5] != 0;
      for (int pos = begin_pos; pos <= end_pos; ++pos) {
        const fmla::Chunk c = fmla::chunk_of(p, pos, begin_pos, begin_blk, end_pos, end_blk, begin_split, m, reordered);
        std::printf("%d %d %d %d %d %d %d\n", z, m, c.req, c.first, c.last, c.split_idx, (int)c.is_split);
      }
    }
  return 0;
}
