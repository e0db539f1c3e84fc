#!/usr/bin/env bash
# Before a device call, on the CPU machine: every variant of a VARIANTS string (bench/experiments.sh's syntax,
# "name:diff1+diff2:-DOPTS:ENV=v|...") applies to the working tree and compiles under the device's NVRTC 13.0 with
# no spill, and the CPU tests pass on its tree. A failed start or a diff that does not apply costs device time;
# this costs none. Usage: VARIANTS="v24:::|bf:best-fit-plan::" bash bench/preflight.sh   (after
# bench/compile_check_nvrtc.sh 13.0 has fetched /tmp/nvrtc-13.0; CPU_TESTS=0 skips the tests)
set -uo pipefail
root=$PWD
nvrtc=${NVRTC_DIR:-/tmp/nvrtc-13.0}
[ -f "$nvrtc/lib/libnvrtc.so.13" ] || { echo "preflight: no NVRTC at $nvrtc (run bench/compile_check_nvrtc.sh 13.0)"; exit 2; }
IFS='|' read -ra variants <<< "${VARIANTS:?set VARIANTS}"
failed=0
for v in "${variants[@]}"; do
  IFS=':' read -r name diffs opts _ <<< "$v"
  dir=/tmp/preflight_$name
  rm -rf "$dir" && mkdir -p "$dir"
  # what travels to the device: tracked files and untracked ones git does not ignore, as they are now
  (cd "$root" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -x -C "$dir"
  ok=1
  for d in ${diffs//+/ }; do
    (cd "$dir" && git apply "bench/experiments/$d.diff") || { echo "=== $name: $d.diff does not apply"; ok=0; }
  done
  if [ $ok = 1 ]; then
    report=$(cd "$dir" && NVRTC_DIR="$nvrtc" PYTHONPATH="$dir" FLASHMLA_RT_NVRTC_OPTIONS="$opts" \
        bash bench/compile_check_nvrtc.sh 13.0 2>&1)
    echo "$report" | tail -1 | sed "s/^/=== $name: /"
    echo "$report" | grep -q "^OK" || ok=0
  fi
  if [ $ok = 1 ] && [ "${CPU_TESTS:-1}" = 1 ]; then
    summary=$(cd "$dir" && PYTHONPATH="$dir" python3 -m pytest tests -q -p no:cacheprovider 2>&1 | tail -1)
    echo "=== $name: $summary"
    [[ "$summary" =~ failed|error ]] && ok=0
  fi
  [ $ok = 1 ] || failed=1
done
exit $failed
