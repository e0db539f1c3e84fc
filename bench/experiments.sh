#!/usr/bin/env bash
# Device call: measure experiment diffs (bench/experiments/*.diff) one at a time against the working tree.
# Each variant is "name:diff1+diff2:-DOPTS:VAR=value,VAR2=value" (diffs, options and environment settings may be
# empty); it gets its own copy of the tree, a correctness subset of the GPU tests, and graph/eager timings of the
# bench rows ROWS (peer only for the first variant); a variant that fails its subset is not benched. With
# ROUNDS=N the variants' benches run N times in turn (A B A B ...), and bench/experiments_summary.py prints each
# row's median per variant: sequential single runs drift by up to 3 % on identical code (NOTES, call 77). With
# SUITE_ON_BEST=1 the whole GPU suite then runs on the variant whose medians are lowest (experiments_summary.py
# --best; skipped when that is the first, the base) into $OUT/pytest_best.txt, so that one call both times the
# variants and checks the one most likely to land. Usage (device tool, carry .peers):
#   VARIANTS="base:::|chains:softmax-chains::" ROWS=0,12,22 ROUNDS=3 bash bench/experiments.sh
set -o pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root=$PWD
IFS='|' read -ra variants <<< "${VARIANTS:-v6::}"
names=()
declare -A opts_of env_of
enter_variant() {   # in a subshell: the variant's tree, cache, NVRTC options and environment settings
  local name=$1 e
  cd "/tmp/variant_$name" || exit 1
  export PYTHONPATH=/tmp/variant_$name:$root/.peers FLASHMLA_RT_CACHE_DIR=/tmp/cache_$name \
      FLASHMLA_RT_NVRTC_OPTIONS="${opts_of[$name]}"
  [ -n "${env_of[$name]}" ] && for e in ${env_of[$name]//,/ }; do export "$e"; done
}
for v in "${variants[@]}"; do
  IFS=':' read -r name diffs opts envset <<< "$v"
  if [ -n "$envset" ] && ! [[ "$envset" =~ ^[A-Za-z_][A-Za-z0-9_]*=[^,]*(,[A-Za-z_][A-Za-z0-9_]*=[^,]*)*$ ]]; then   # e.g. a -D in the wrong field
    echo "=== $name: environment field '$envset' is not NAME=value" | tee -a "$OUT/experiments.txt"; continue
  fi
  dir=/tmp/variant_$name; rm -rf "$dir" "$dir.failed"; cp -r "$root" "$dir"
  ( cd "$dir" && for d in ${diffs//+/ }; do git apply "bench/experiments/$d.diff" || exit 1; done ) \
      || { echo "=== $name: diff does not apply" | tee -a "$OUT/experiments.txt"; continue; }
  names+=("$name"); opts_of[$name]=$opts; env_of[$name]=$envset
  (
    enter_variant "$name"
    echo "=== $name [$diffs] [$opts] [$envset]"
    python3 -m flashmla_rt compile --check 2>&1 | tail -9
    k=${TESTS_K:-edge_lengths or forced_split or block_table_extra or unit_normal or corner_half_empty or fastpath or peaked or best_fit}
    [ "$k" = all ] && k="not no_such_test"
    echo "=== $name" >> "$OUT/pytest.txt"                   # one file for all: the device returns at most 8
    timeout "${TEST_TIMEOUT:-200}" python3 -m pytest ${TESTS:-tests/test_decode_gpu.py tests/test_fastpath.py} -q -x \
        -rs -p no:cacheprovider -k "$k" 2>&1 | tee -a "$OUT/pytest.txt" | tail -4
    rc=${PIPESTATUS[0]}
    # a variant that fails (or hangs in) its correctness subset cannot land: timing it only spends device time
    if [ "$rc" != 0 ] && [ "$rc" != 5 ]; then
      echo "=== $name: correctness subset failed (pytest rc $rc); not benched"; touch "/tmp/variant_$name.failed"
    fi
  ) 2>&1 | tee -a "$OUT/experiments.txt"
  [ -e "/tmp/variant_$name.failed" ] && unset 'names[${#names[@]}-1]'
done
names=("${names[@]}")
for ((round = 1; round <= ${ROUNDS:-1}; round++)); do
  first=1
  for name in "${names[@]}"; do
    (
      enter_variant "$name"
      peer=--no-peer; [ $first = 1 ] && [ $round = 1 ] && [ "${PEER:-1}" = 1 ] && peer=
      echo "=== $name bench, round $round"
      rm -rf "/tmp/bench_${name}_r$round"
      python3 -m flashmla_rt bench --rows "${ROWS:-0,1,12,13,16,20,22,24,25}" $peer --iters "${ITERS:-30}" \
          --out "/tmp/bench_${name}_r$round" 2>&1 | grep -E "^ +[0-9]+ b|peer|FlashMLA" | tail -24
    ) 2>&1 | tee -a "$OUT/experiments.txt"
    first=0
  done
done
python3 "$root/bench/experiments_summary.py" "$OUT" "${names[@]}" 2>&1 | tee -a "$OUT/experiments.txt"
if [ "${SUITE_ON_BEST:-0}" = 1 ] && [ ${#names[@]} -gt 1 ]; then
  best=$(python3 "$root/bench/experiments_summary.py" --best "$OUT" "${names[@]}")
  if [ "$best" = "${names[0]}" ]; then
    echo "=== best: ${names[0]} (the base); whole suite skipped" | tee -a "$OUT/experiments.txt"
  else
    echo "=== best: $best; whole suite on its tree" | tee -a "$OUT/experiments.txt"
    ( enter_variant "$best"
      timeout "${SUITE_TIMEOUT:-200}" python3 -m pytest tests -q -rs -p no:cacheprovider > "$OUT/pytest_best.txt" 2>&1
      tail -3 "$OUT/pytest_best.txt" ) 2>&1 | tee -a "$OUT/experiments.txt"
  fi
fi
