// Runs kernels_cu/mla_metadata.cu on the warp emulator. stdin: "batch parts" then batch lengths; stdout: the
// [parts, 8] metadata rows, then the batch + 1 num_splits, as whitespace-separated integers.
#include <cstdio>
#include <thread>
#include <vector>
#include "mla_metadata.cu"

int main() {
  int batch, parts;
  if (std::scanf("%d %d", &batch, &parts) != 2) return 2;
  std::vector<int> seqlens(batch), meta(parts * 8, -7), num_splits(batch + 1, -7);
  for (int& s : seqlens)
    if (std::scanf("%d", &s) != 1) return 2;
  std::barrier<> bar(32);
  emu::warp_barrier = &bar;
  std::vector<std::thread> lanes;
  for (unsigned lane = 0; lane < 32; ++lane)
    lanes.emplace_back([&, lane] {
      emu::lane_id = lane;
      threadIdx = {lane, 0, 0};
      mla_metadata(seqlens.data(), batch, parts, meta.data(), num_splits.data());
      bar.arrive_and_drop();            // a lane that has returned no longer holds the others at a barrier
    });
  for (auto& t : lanes) t.join();
  for (int v : meta) std::printf("%d ", v);
  std::printf("\n");
  for (int v : num_splits) std::printf("%d ", v);
  std::printf("\n");
  return 0;
}
