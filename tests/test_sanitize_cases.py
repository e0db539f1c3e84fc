"""bench/sanitize_cases.py on the CPU: the cases run under compute-sanitizer reach every kernel and path.

The kernels each case launches come from the host's own choices (kernels.decode_variant, the schedule's plan,
kernels.combine_launch), so a change there that leaves a kernel unsanitized fails here.
"""
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np

from flashmla_rt import kernels

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "sanitize_cases.py"
spec = importlib.util.spec_from_file_location("sanitize_cases", SCRIPT)
sc = importlib.util.module_from_spec(spec)
sys.modules["sanitize_cases"] = sc          # its dataclass looks its module up there
spec.loader.exec_module(sc)


def test_every_kernel_and_output_path_is_run():
    seen = {name for case in sc.CASES for name in sc.kernels_run(case)}
    decode = {v.name for v in kernels.DECODE_VARIANTS.values()} | {kernels.SEESAW_ONE_MBLOCK.name}
    assert decode | {"metadata", "combine_wide", "combine_many_rows", "(direct out)"} <= seen


def test_each_decode_kernel_writes_direct_and_split_results():
    paths = {}
    for case in sc.CASES:
        names = sc.kernels_run(case)
        paths.setdefault(names[1], set()).update(n for n in names[2:])
    for variant, got in paths.items():
        assert "(direct out)" in got and got & {"combine_wide", "combine_many_rows"}, (variant, got)


def test_inputs_cover_dtypes_pages_masks_and_bad_tables():
    cases = sc.CASES
    assert {c.dtype for c in cases} == {"bfloat16", "float16"}
    assert {c.page for c in cases} == {16, 32, 64, 128, 256}
    assert any(c.causal and c.s_q > 1 for c in cases) and any(c.h_kv > 1 for c in cases)
    assert {c.garbage for c in cases} == {"bad_page", "random"} and any(c.extra_cols for c in cases)
    lengths = np.concatenate([np.asarray(c.seqlens) for c in cases])
    assert {0, 1}.issubset(set(lengths.tolist())) and any(int(x) % 64 not in (0, 1) for x in lengths)
    assert any(all(x == 0 for x in c.seqlens) for c in cases)
    assert len({c.name for c in cases}) == len(cases)


def test_list_runs_without_a_gpu():
    res = subprocess.run([sys.executable, str(SCRIPT), "--list"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == len(sc.CASES)
