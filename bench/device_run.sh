#!/usr/bin/env bash
# One device call: compile report, warm-import timing, the whole test suite, the benchmark grid.
# Usage (device tool, carry .peers): bash bench/device_run.sh [pytest args...]
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 FLASHMLA_RT_CACHE_DIR=/tmp/flashmla_rt_cache
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m flashmla_rt compile --check 2>&1 | tee "$OUT/compile.txt"
for i in 1 2; do /usr/bin/time -f "warm import %e s" python3 -c "import flashmla_rt" 2>&1 | tee -a "$OUT/compile.txt"; done
python3 -X importtime -c "import flashmla_rt" 2>&1 | sort -t'|' -k2 -n | tail -8 >> "$OUT/compile.txt"
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  timeout "${TEST_TIMEOUT:-420}" python3 -m pytest tests -q -rs -p no:cacheprovider --durations=12 "$@" 2>&1 | tee "$OUT/pytest.txt" | tail -30
fi
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  python3 -m flashmla_rt bench --out "$OUT" 2>&1 | tee "$OUT/bench.txt" | tail -40
fi
if [ "${SKIP_PROFILE:-0}" != 1 ]; then
  python3 bench/profile_host.py "$OUT" 2>&1 | head -40
fi
