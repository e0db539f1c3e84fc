// Stand-in for kernels_cu/common/nvrtc_shim.cuh when the metadata kernel is compiled as C++ by the warp emulator.
#pragma once
#include "warp.h"
