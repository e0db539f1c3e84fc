"""bench/experiments_summary.py on the CPU: per-row medians over rounds, and which variant SUITE_ON_BEST checks."""
import importlib.util
import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "experiments_summary.py"
spec = importlib.util.spec_from_file_location("experiments_summary", SCRIPT)
summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(summary)


def test_medians_keep_only_rows_every_round_measured():
    m = summary.medians_of([{4: 10.0, 6: 20.0}, {4: 12.0, 6: 21.0}, {4: 11.0}])
    assert m == {4: (11.0, [10.0, 12.0, 11.0])}


def test_best_is_the_lowest_geometric_mean_against_the_base():
    base = {4: (100.0, []), 6: (200.0, [])}
    fast_one_row = {4: (90.0, []), 6: (210.0, [])}      # -10 %, +5 %: geometric mean ~ -2.8 %
    even = {4: (99.0, []), 6: (198.0, [])}              # -1 % on both
    assert summary.best_variant({"base": base, "a": fast_one_row, "b": even}) == "a"
    assert summary.best_variant({"base": base, "b": even}) == "b"


def test_best_is_the_base_when_nothing_beats_it_or_on_a_tie():
    base = {4: (100.0, [])}
    assert summary.best_variant({"base": base, "slow": {4: (101.0, [])}}) == "base"
    assert summary.best_variant({"base": base, "same": {4: (100.0, [])}}) == "base"
    assert summary.best_variant({"base": base, "other_rows": {6: (1.0, [])}}) == "base"


@pytest.fixture
def rounds():
    """Two variants' bench JSONs where experiments.sh leaves them (/tmp/bench_<name>_r<k>/)."""
    tag = uuid.uuid4().hex[:8]
    names = [f"base{tag}", f"var{tag}"]
    made = []
    for name, us in zip(names, ([100.0, 102.0, 101.0], [95.0, 96.0, 99.0])):
        for k, t in enumerate(us, 1):
            d = Path(f"/tmp/bench_{name}_r{k}")
            d.mkdir()
            made.append(d)
            doc = {"rows": [{"row": 8, "label": "b128 s_q1 h_q128 s_k4096", "ours": {"graph": {"us": t}}}]}
            (d / "bench.json").write_text(json.dumps(doc))
    yield names
    for d in made:
        shutil.rmtree(d)


def test_command_line_best_and_summary(rounds, tmp_path):
    best = subprocess.run([sys.executable, str(SCRIPT), "--best", str(tmp_path), *rounds],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert best == rounds[1]
    table = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), *rounds],
                           capture_output=True, text=True, check=True).stdout
    assert "96.0 (-5.0%; 95.0-99.0)" in table                # median 96 against 101, and the rounds range
    doc = json.loads((tmp_path / f"bench_{rounds[1]}.json").read_text())
    assert doc["rows"][0]["ours"]["graph_us_median"] == 96.0


def test_command_line_best_is_the_base_when_the_base_has_no_timings(rounds, tmp_path):
    for k in (1, 2, 3):
        shutil.rmtree(f"/tmp/bench_{rounds[0]}_r{k}")
        Path(f"/tmp/bench_{rounds[0]}_r{k}").mkdir()          # the fixture removes it again
    best = subprocess.run([sys.executable, str(SCRIPT), "--best", str(tmp_path), *rounds],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert best == rounds[0]
