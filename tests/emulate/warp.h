// A one-warp CUDA emulator for CPU tests of the metadata kernel (tests/test_metadata_emulated.py): the kernel
// source compiles as C++20 and runs on 32 std::threads, one per lane. __syncwarp and every warp collective
// are std::barrier rendezvous, so shared memory written before one is visible to all lanes after it. Only
// what kernels_cu/mla_metadata.cu uses is here; every collective must be reached by all 32 lanes.
#pragma once
#include <algorithm>
#include <array>
#include <barrier>
#include <cstdint>
#include <cstring>
#include <type_traits>

#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __restrict__
#define __shared__ static

namespace emu {
inline std::barrier<>* warp_barrier = nullptr;
inline unsigned long long slots[32];
inline thread_local unsigned lane_id = 0;
inline void sync() { warp_barrier->arrive_and_wait(); }
// Every lane posts v; returns all 32 lanes' values (a rendezvous before and after, so slots can be reused).
template <class T> std::array<T, 32> all_lanes(T v) {
  unsigned long long bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  slots[lane_id] = bits;
  sync();
  std::array<T, 32> r;
  for (int i = 0; i < 32; ++i) std::memcpy(&r[i], &slots[i], sizeof(T));
  sync();
  return r;
}
}  // namespace emu

struct Dim3 { unsigned x, y, z; };
inline thread_local Dim3 threadIdx;

inline void __syncwarp(unsigned = 0xffffffffu) { emu::sync(); }
template <class T> T __shfl_xor_sync(unsigned, T v, int o) { return emu::all_lanes(v)[emu::lane_id ^ o]; }
template <class T> T __shfl_up_sync(unsigned, T v, int d) {
  const auto all = emu::all_lanes(v);
  return (int)emu::lane_id >= d ? all[emu::lane_id - d] : v;
}
inline unsigned __ballot_sync(unsigned, int pred) {
  const auto all = emu::all_lanes(pred ? 1 : 0);
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= (unsigned)all[i] << i;
  return r;
}
inline int __reduce_max_sync(unsigned, int v) {
  const auto all = emu::all_lanes(v);
  return *std::max_element(all.begin(), all.end());
}
inline int __ffs(unsigned x) { return __builtin_ffs((int)x); }
inline int __clz(unsigned x) { return x ? __builtin_clz(x) : 32; }
template <class T> T __ldg(const T* p) { return *p; }
template <class A, class B> auto min(A a, B b) { using C = std::common_type_t<A, B>; return std::min<C>(a, b); }
template <class A, class B> auto max(A a, B b) { using C = std::common_type_t<A, B>; return std::max<C>(a, b); }
