#!/usr/bin/env bash
# Device call: ncu sections + per-instruction stall samples for our decode kernel and FlashMLA's on two rows,
# and our decode cubins' SASS. Usage (device tool, carry .peers): bash bench/ncu_run.sh
export PYTHONPATH=$PWD:$PWD/.peers FLASHMLA_RT_CACHE_DIR=/tmp/flashmla_rt_cache
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m flashmla_rt compile >/dev/null 2>&1
for f in $(find "$FLASHMLA_RT_CACHE_DIR" -name '*.cubin'); do
  cuobjdump --dump-sass "$f" > "$OUT/$(basename "$f").sass" 2>&1
done
for case in ${CASES:-"128 1 16 8192" "128 2 128 8192"}; do
  tag=$(echo "$case" | tr ' ' _)
  ncu --clock-control none -k regex:"decode|splitkv" --launch-count 2 \
      --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SourceCounters \
      --section LaunchStats --section Occupancy -f -o "$OUT/ncu_$tag" python3 bench/ncu_case.py $case --calls 1 \
      > "$OUT/ncu_$tag.log" 2>&1
  ncu -i "$OUT/ncu_$tag.ncu-rep" --print-details all > "$OUT/ncu_$tag.txt" 2>&1
  ncu -i "$OUT/ncu_$tag.ncu-rep" --page source --print-source sass --csv > "$OUT/ncu_${tag}_sass.csv" 2>&1
  grep -E "Duration|DRAM Throughput|Compute \(SM\)|Stall|Warp Cycles|^  [a-z_]+.*\(" "$OUT/ncu_$tag.txt" | head -60
done
ls -la "$OUT"
