"""Does a warp stall at an RS wgmma's issue until the wgmma has read its A registers?

One CTA of one warpgroup runs the seesaw's P·V shape (O[64x256] += P[64x64] V, four m64n256k16 wgmmas) many times
and reads clock64 before the four issues, after them plus a chain of `alu` dependent FMAs on unrelated registers,
and after the wait. RS (P from registers) against SS (P from shared memory). If an RS issue stalls the warp, its
"issued" time is close to its "done" time and the FMA chain does not hide under the wgmma; for SS it does.
Prints median cycles per iteration. The data is zeros: only the timing matters.
Usage (device): python bench/wgmma_issue_probe.py
"""
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))   # the package of this checkout, unless PYTHONPATH has one

PROBE = r"""
#include "common/nvrtc_shim.cuh"
#include "common/ptx_async.cuh"
#include "common/ptx_wgmma.cuh"

namespace fmla {
constexpr int kVBytes = 64 * 256 * 2, kPBytes = 64 * 64 * 2, kGroupStride = 4 * 1024;   // the seesaw's V region

template <bool kRS>
__device__ void probe_body(unsigned long long* out, int iters, int alu) {
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  const uint32_t raw = smem_u32(smem_raw), base = (raw + 1023u) & ~1023u;
  const int tid = threadIdx.x;
  for (int i = tid; i < (kVBytes + kPBytes) / 4; i += 128) st_shared_s32(base + 4 * i, 0);
  fence_proxy_async_smem();
  __syncthreads();
  float o[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) o[i] = 0.f;
  uint32_t pa[16];
#pragma unroll
  for (int i = 0; i < 16; ++i) pa[i] = (uint32_t)ld_shared_at_use(base + 4 * (tid + 128 * i));   // zeros, opaque
  const uint64_t dv = smem_desc_sw128(base, 1024, kGroupStride), dp = desc_k_major(base + kVBytes);
  unsigned long long issued = 0, done = 0;
  float x = (float)tid;
  for (int it = 0; it < iters; ++it) {
    const unsigned long long t0 = clock64();
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const uint64_t b = dv + ((kk * 2 * kGroupStride) >> 4);
      if (kRS) {
        const uint32_t a[4] = {pa[4 * kk], pa[4 * kk + 1], pa[4 * kk + 2], pa[4 * kk + 3]};
        wgmma_m64n256k16_rs_tb<true>(o, a, b);
      } else {
        wgmma_m64n256k16_ss_tb<true>(o, dp + ((kk * 32) >> 4), b, 1);
      }
    }
    wgmma_commit();
#pragma unroll 1
    for (int j = 0; j < alu; ++j) x = fmaf(x, 1.0001f, 0.5f);
    asm volatile("" : "+f"(x));
    const unsigned long long t1 = clock64();
    wgmma_wait<0>();
    fence_accumulators(o);
    const unsigned long long t2 = clock64();
    if (it > 0) { issued += t1 - t0; done += t2 - t0; }
  }
  float acc = x;
#pragma unroll
  for (int i = 0; i < 128; ++i) acc += o[i];
  if (tid == 0) { out[0] = issued; out[1] = done; out[2] = (unsigned long long)__float_as_uint(acc); }
}
}  // namespace fmla

extern "C" __global__ void __launch_bounds__(128, 1) probe_rs(unsigned long long* out, int iters, int alu) {
  fmla::probe_body<true>(out, iters, alu);
}
extern "C" __global__ void __launch_bounds__(128, 1) probe_ss(unsigned long long* out, int iters, int alu) {
  fmla::probe_body<false>(out, iters, alu);
}
"""


def build():
    """The probe's cubin, through the package's compiler (includes resolve against kernels_cu/; not cached)."""
    from flashmla_rt.jit import compiler
    return compiler.compile_text(PROBE, "wgmma_issue_probe")


def main():
    import cupy
    import numpy as np
    mod = cupy.cuda.function.Module()
    mod.load(build())
    smem = 64 * 256 * 2 + 64 * 64 * 2 + 1024
    iters, out = 64, cupy.zeros(3, dtype=cupy.uint64)
    print(f"{'A':3s} {'alu':>4s} {'issued':>8s} {'done':>8s}   (median cycles per iteration of 4 wgmmas, 21 launches)")
    for name in ("rs", "ss"):
        fn = mod.get_function(f"probe_{name}")
        for alu in (0, 64, 256):
            rows = []
            for _ in range(21):
                fn((1,), (128,), (out, np.int32(iters), np.int32(alu)), shared_mem=smem)
                issued, done, _ = (int(v) for v in out.get())
                rows.append((issued / (iters - 1), done / (iters - 1)))
            issued, done = np.median(np.array(rows), axis=0)
            print(f"{name.upper():3s} {alu:4d} {issued:8.0f} {done:8.0f}")


if __name__ == "__main__":
    main()
