#!/usr/bin/env bash
# `compile --check` under another NVRTC release, on the CPU machine: the device image ships NVRTC 13.0 while a
# fresh install gets the newest 13.x, and the two allocate registers differently (13.0 spilled 4 B that 13.5 did
# not). Usage: bash bench/compile_check_nvrtc.sh [VERSION, default 13.0]   (needs pip download access)
set -euo pipefail
version=${1:-13.0}
dir=${NVRTC_DIR:-/tmp/nvrtc-$version}
if [ ! -f "$dir/lib/libnvrtc.so.13" ]; then
  rm -rf "$dir.dl" && mkdir -p "$dir.dl"
  python3 -m pip download -q --no-deps "nvidia-cuda-nvrtc==$version.*" -d "$dir.dl"
  python3 -m zipfile -e "$dir.dl"/nvidia_cuda_nvrtc-*.whl "$dir.dl/x"
  mkdir -p "$dir" && cp -r "$dir.dl/x/nvidia/cu13/lib" "$dir/"
fi
LD_PRELOAD="$dir/lib/libnvrtc.so.13" LD_LIBRARY_PATH="$dir/lib" FLASHMLA_RT_CACHE_DIR="$dir/cache" \
  python3 -m flashmla_rt compile --check
