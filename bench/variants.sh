#!/usr/bin/env bash
# Device call: compare compile-time variants of the decode kernel (NVRTC -D options) in one go: a correctness
# subset of the GPU tests, graph timings of a few bench rows, and the pair timeline of CTA 0.
# Usage (device tool): VARIANTS="|-DFMLA_REFILL_LATE=1" bash bench/variants.sh     ('|' separates variants)
export PYTHONPATH=$PWD FLASHMLA_RT_CACHE_DIR=/tmp/flashmla_rt_cache
IFS='|' read -ra variants <<< "${VARIANTS:-}"
[ ${#variants[@]} -eq 0 ] && variants=("")
for opts in "${variants[@]}"; do
  export FLASHMLA_RT_NVRTC_OPTIONS="$opts"
  echo "=== variant [$opts]"
  timeout 150 python3 -m pytest tests/test_decode_gpu.py -q -x -p no:cacheprovider \
      -k "edge_lengths or forced_split or block_table_extra or unit_normal or corner_half_empty" 2>&1 | tail -2
  python3 -m flashmla_rt bench --rows "${ROWS:-0,12,16,22,24,25}" --no-peer --iters 20 --out /tmp/vb 2>&1 \
      | grep -E "^ +[0-9]+ b" | tail -6
  python3 bench/trace_decode.py 128 2 128 8192 2>&1 | grep -v compiling | tail -17
done
