"""The metadata kernel itself (kernels_cu/mla_metadata.cu), run on the CPU: compiled as C++20 against a one-warp
emulator (tests/emulate/warp.h: 32 std::threads, warp collectives as barriers) and compared, array for array,
with the NumPy twin it must equal (flashmla_rt/schedule.py). The GPU tests compare the real kernel with the
twin too; this catches a kernel/twin difference without a GPU. Skips where there is no C++20 compiler."""
import subprocess

import numpy as np
import pytest

from emulate_build import build_host_program
from flashmla_rt import bench, schedule


@pytest.fixture(scope="module")
def emulated_kernel(tmp_path_factory):
    exe = build_host_program(tmp_path_factory.mktemp("metadata_emulated"), "run_metadata.cpp",
                             kernel_sources=("mla_metadata.cu",))

    def run(seqlens, parts):
        text = f"{len(seqlens)} {parts}\n" + " ".join(str(int(s)) for s in seqlens) + "\n"
        done = subprocess.run([str(exe)], input=text, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        meta_line, splits_line = done.stdout.strip().split("\n")
        meta = np.array(meta_line.split(), dtype=np.int64).astype(np.int32).reshape(parts, 8)
        return meta, np.array(splits_line.split(), dtype=np.int32)
    return run


def bench_varlen(b, s_k, seed):
    return bench.make_seqlens(b, 1, s_k, True, seed)            # the bench grid's varlen lengths


CASES = {
    "varlen_4k_132": (bench_varlen(128, 4096, 0), 132),      # best fit (the bench's varlen rows)
    "varlen_4k_66": (bench_varlen(128, 4096, 1), 66),
    "varlen_8k_33": (bench_varlen(128, 8192, 2), 33),
    "varlen_2k_b256_66": (bench_varlen(256, 2048, 3), 66),
    "uniform_66": ([4096] * 128, 66),                        # whole requests in order
    "uniform_100": ([8192] * 128, 100),                      # cut in order, by best fit
    "large_batch": (bench_varlen(300, 4096, 4), 132),        # no order carried: the greedy
    "single_long": ([65536], 66),
    "empties": ([0, 0, 5000, 0, 1, 64, 65, 0], 7),
    "one_part": ([100, 200, 300], 1),
    "past_the_table": ([600000, 600000], 3),                 # order carried, lengths past the device's table
    "past_the_record": (bench_varlen(128, 4096, 5), 200),    # order carried, more parts than a lane records
}


@pytest.mark.parametrize("name", list(CASES))
def test_kernel_equals_the_twin(emulated_kernel, name):
    seqlens, parts = CASES[name]
    meta, num_splits = emulated_kernel(seqlens, parts)
    want_meta, want_splits = schedule.plan(np.asarray(seqlens), parts)
    np.testing.assert_array_equal(meta, want_meta)
    np.testing.assert_array_equal(num_splits, want_splits)


@pytest.mark.parametrize("seed", range(12))
def test_kernel_equals_the_twin_random(emulated_kernel, seed):
    rng = np.random.default_rng(seed)
    b = int(rng.integers(1, 300))
    parts = int(rng.choice([1, 3, 16, 33, 66, 132, 133]))
    seqlens = rng.integers(0, int(rng.choice([300, 5000, 40000])), size=b)
    seqlens[rng.random(b) < 0.2] = 0
    meta, num_splits = emulated_kernel(seqlens, parts)
    want_meta, want_splits = schedule.plan(seqlens, parts)
    np.testing.assert_array_equal(meta, want_meta)
    np.testing.assert_array_equal(num_splits, want_splits)
