#!/usr/bin/env bash
# Device call: ncu sections + per-instruction stall samples (SASS csv) for our decode kernel (and FlashMLA's
# unless CASE_ARGS=--no-peer) on bench rows. Usage (device tool, carry .peers):
#   CASES="128,2,128,8192;128,1,16,8192" bash bench/ncu_run.sh      (b,s_q,h_q,s_k per case)
export PYTHONPATH=$PWD:$PWD/.peers FLASHMLA_RT_CACHE_DIR=/tmp/flashmla_rt_cache
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m flashmla_rt compile >/dev/null 2>&1
IFS=';' read -ra cases <<< "${CASES:-128,1,16,8192;128,2,128,8192}"
for case in "${cases[@]}"; do
  tag=$(echo "$case" | tr ',' _); args=$(echo "$case" | tr ',' ' ')
  ncu --clock-control none -k regex:"decode|splitkv" --launch-count "${LAUNCHES:-2}" \
      --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SourceCounters \
      --section LaunchStats --section Occupancy -f -o "/tmp/ncu_$tag" python3 bench/ncu_case.py $args --calls 1 \
      ${CASE_ARGS:-} > "$OUT/ncu_$tag.txt" 2>&1
  ncu -i "/tmp/ncu_$tag.ncu-rep" --print-details all >> "$OUT/ncu_$tag.txt" 2>&1
  ncu -i "/tmp/ncu_$tag.ncu-rep" --page source --print-source sass --csv > "$OUT/ncu_${tag}_sass.csv" 2>&1
  grep -E "Duration|DRAM Throughput|Stall (Barrier|Wait|Long|GMMA|No Inst)" "$OUT/ncu_$tag.txt" | head -20
done
ls -la "$OUT"
