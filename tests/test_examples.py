"""The examples run end to end: on a Hopper GPU through the kernels, checked against the reference, and
anywhere else through the NumPy reference."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p.name for p in (REPO / "examples").glob("*.py"))


def test_examples_exist():
    assert {"serving_loop.py", "frameworks.py"} <= set(EXAMPLES)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs(name):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               XLA_PYTHON_CLIENT_PREALLOCATE="false")     # this test process may already hold GPU memory
    args = ["--steps", "3"] if name == "serving_loop.py" else []
    r = subprocess.run([sys.executable, str(REPO / "examples" / name), *args], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("OK") or " -> OK" in last, r.stdout
