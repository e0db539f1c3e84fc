// Host stand-ins for the CUDA built-ins and vector types that kernels_cu/common/decode_tile.cuh and its includes
// name, so that its schedule logic (chunk_of) compiles as C++ for tests/test_chunks_emulated.py. Used with warp.h
// (-include both). Only the integer schedule code runs; the math and PTX helpers are declared, never called.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

struct uint4 { unsigned x, y, z, w; };
struct __nv_bfloat162 { unsigned short x, y; };
struct __half2 { unsigned short x, y; };
inline unsigned long long __cvta_generic_to_shared(const void* p) { return (unsigned long long)(uintptr_t)p; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline __nv_bfloat162 __floats2bfloat162_rn(float, float) { return {}; }   // never called by the walk
inline __half2 __floats2half2_rn(float, float) { return {}; }
