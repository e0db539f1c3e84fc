// A one-warp CUDA emulator for CPU tests of the metadata kernel (tests/test_metadata_emulated.py): the kernel
// source compiles as C++20 and runs on 32 std::threads, one per lane. __syncwarp and every warp collective
// are std::barrier rendezvous, so shared memory written before one is visible to all lanes after it. Only
// what kernels_cu/mla_metadata.cu uses is here; every collective must be reached by all 32 lanes.
#pragma once
#include <algorithm>
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
template <class T> T exchange(T v, int src, bool take) {   // every lane posts v, then reads lane src's
  unsigned long long bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  slots[lane_id] = bits;
  sync();
  unsigned long long got = slots[src];
  sync();
  T r = v;
  if (take) std::memcpy(&r, &got, sizeof(T));
  return r;
}
}  // namespace emu

struct Dim3 { unsigned x, y, z; };
inline thread_local Dim3 threadIdx;

inline void __syncwarp(unsigned = 0xffffffffu) { emu::sync(); }
template <class T> T __shfl_xor_sync(unsigned, T v, int o) { return emu::exchange(v, (int)(emu::lane_id ^ o), true); }
template <class T> T __shfl_up_sync(unsigned, T v, int d) {
  const int src = (int)emu::lane_id - d;
  return emu::exchange(v, src < 0 ? (int)emu::lane_id : src, src >= 0);
}
inline unsigned __ballot_sync(unsigned, int pred) {
  emu::slots[emu::lane_id] = pred ? 1 : 0;
  emu::sync();
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= (unsigned)emu::slots[i] << i;
  emu::sync();
  return r;
}
inline int __reduce_max_sync(unsigned, int v) {
  emu::slots[emu::lane_id] = (unsigned long long)(long long)v;
  emu::sync();
  long long r = (long long)emu::slots[0];
  for (int i = 1; i < 32; ++i) r = std::max(r, (long long)emu::slots[i]);
  emu::sync();
  return (int)r;
}
inline int __ffs(unsigned x) { return __builtin_ffs((int)x); }
inline int __clz(unsigned x) { return x ? __builtin_clz(x) : 32; }
template <class T> T __ldg(const T* p) { return *p; }
template <class A, class B> auto min(A a, B b) { using C = std::common_type_t<A, B>; return std::min<C>(a, b); }
template <class A, class B> auto max(A a, B b) { using C = std::common_type_t<A, B>; return std::max<C>(a, b); }
