// What every flashmla_rt kernel needs before anything else: the sm_90a guard and fixed-width integer
// types (<cstdint> and <cuda.h> do not compile under NVRTC without a host toolchain).
#pragma once

#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "flashmla_rt: kernels must be compiled for sm_90a (arch-specific features missing)"
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>

typedef unsigned char uint8_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
typedef long long int64_t;
