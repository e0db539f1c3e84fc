#!/usr/bin/env bash
# Device call: every kernel under compute-sanitizer, on the adversarial cases of bench/sanitize_cases.py.
# memcheck: out-of-bounds or misaligned global/shared accesses (each torch tensor is its own allocation here, so a
# read past a tensor's end is outside any allocation); initcheck: global memory read before anything wrote it
# (e.g. a combine reading a split partial no decode CTA wrote); synccheck: barrier misuse; racecheck: shared-memory
# hazards between threads. One file per tool; "rc" 0 = clean, 17 = the tool reported errors, 1 = wrong results,
# 124 = timed out. Usage (device tool): TOOLS="memcheck initcheck" TOOL_TIMEOUT=100 bash bench/sanitize.sh
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
# -lineinfo: the reports name kernels_cu/ lines (no change to the code ptxas emits; it is part of the cache key).
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
    FLASHMLA_RT_CACHE_DIR=${FLASHMLA_RT_CACHE_DIR:-/tmp/cache_sanitize} \
    FLASHMLA_RT_NVRTC_OPTIONS=${FLASHMLA_RT_NVRTC_OPTIONS:--lineinfo}
sanitizer=${SANITIZER:-$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)}
python3 -m flashmla_rt compile > /dev/null          # cubins into the cache outside the sanitizer
python3 bench/sanitize_cases.py --list > "$OUT/sanitize.txt"
declare -A tool_opts=(
  [memcheck]="--leak-check no" [initcheck]="" [synccheck]="" [racecheck]="--racecheck-report all"
)
for tool in ${TOOLS:-memcheck initcheck synccheck racecheck}; do
  timeout "${TOOL_TIMEOUT:-100}" "$sanitizer" --tool "$tool" ${tool_opts[$tool]} --error-exitcode 17 --print-limit 20 \
      --target-processes all \
      python3 bench/sanitize_cases.py > "$OUT/sanitize_$tool.txt" 2>&1
  rc=$?
  echo "=== $tool rc $rc: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|cases match' "$OUT/sanitize_$tool.txt" | tr '\n' ' ')" \
      | tee -a "$OUT/sanitize.txt"
done
