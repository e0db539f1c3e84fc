"""Generic runtime compilation: CUDA sources -> NVRTC (sm_90a) -> on-disk cubin cache -> loaded functions.

Knows nothing about MLA; `flashmla_rt.kernels` says which sources and functions the package uses."""
