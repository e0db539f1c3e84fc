// Trace builds only (-DFMLA_TRACE=1 via FLASHMLA_RT_NVRTC_OPTIONS; bench/trace_decode.py and bench/trace_ctas.py
// read the arrays): wall-clock (%globaltimer, ns) marks of every CTA (linear id < 4096) in fmla_trace_cta[4 * cta + k]
// of each kernel's module, k = 0 its start, 1 its end, 2 the decode kernels: the last chunk's blocks done (the
// epilogue's start); the combine: its wait for the decode is over. Slot 3 is the SM it ran on (%smid, written with
// the start mark): whether the CTAs that DRAM serves more slowly are always the same SMs (bench/sm_rate_probe.py).
// Without FMLA_TRACE the marks compile to nothing.
#pragma once

#ifdef FMLA_TRACE
extern "C" __device__ unsigned long long fmla_trace_cta[4 * 4096];
__device__ __forceinline__ unsigned long long globaltimer_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
#define FMLA_TRACE_CTA(k)                                                                                \
  do {                                                                                                   \
    const unsigned cta = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);                 \
    if (threadIdx.x == 0 && cta < 4096) {                                                                \
      fmla_trace_cta[4 * cta + (k)] = globaltimer_ns();                                                  \
      if ((k) == 0) {                                                                                    \
        unsigned smid;                                                                                   \
        asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));                                                \
        fmla_trace_cta[4 * cta + 3] = smid;                                                              \
      }                                                                                                  \
    }                                                                                                    \
  } while (0)
#else
#define FMLA_TRACE_CTA(k) do {} while (0)
#endif
