"""Small adversarial decode problems for compute-sanitizer (GPU: H100/H200), covering every kernel the package
launches: the metadata kernel, the seesaw (two m-blocks and one), narrow16, narrow32, the many-rows and the wide
combine, bf16 and fp16, every page size, causal, empty and 1-token requests, split requests, and block tables
whose unused entries hold FlashMLA's bad page id or random int32s (a few with extra columns). Unused cache slots
are NaN (tests/gpu_cases.py), so a read the kernels should not make also shows up in the results.

Each case is decoded twice: into NaN-poisoned out=/lse= (the full host path) and without them (the cached launch
plan), both checked against the NumPy reference. The sanitizer reports what the kernels touch; this script
reports wrong results. Run it under the sanitizer with bench/sanitize.sh; `--list` prints the cases and the
kernels each one runs (no GPU needed).

    python3 bench/sanitize_cases.py [--list]
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import gpu_cases as gc  # noqa: E402

from flashmla_rt import kernels, schedule  # noqa: E402

SM_COUNT = 132          # parts the plan of `--list` assumes (H100 SXM / H200); the GPU run asks the device


@dataclass(frozen=True)
class SanitizeCase:
    name: str
    b: int
    s_q: int
    h_q: int
    h_kv: int
    seqlens: tuple
    page: int = 64
    dtype: str = "bfloat16"
    causal: bool = False
    garbage: str = "bad_page"
    extra_cols: int = 0
    force_seesaw: bool = False      # FLASHMLA_RT_DECODE_KERNEL=seesaw: the 64-row kernel for <= 32 rows

    @property
    def rows(self) -> int:
        return self.s_q * self.h_q // self.h_kv


def _varlen(b, s_k, seed):
    return tuple(int(x) for x in gc.lengths(b, s_k, varlen=True, seed=seed))


CASES = (
    SanitizeCase("seesaw-2mblock-random-ids", 3, 1, 128, 1, (0, 700, 2100), garbage="random"),
    SanitizeCase("seesaw-1mblock-fp16-p16-causal", 4, 2, 32, 1, (1, 65, 300, 1000), page=16, dtype="float16",
                 causal=True),
    SanitizeCase("seesaw-sq4-causal-p256", 2, 4, 16, 1, (3, 513), page=256, causal=True, extra_cols=9),
    SanitizeCase("seesaw-hkv2-p128", 2, 1, 128, 2, (64, 1500), page=128, garbage="random", extra_cols=3),
    SanitizeCase("narrow16-empty-and-1-token", 5, 1, 16, 1, (0, 1, 63, 64, 4000), page=256),
    SanitizeCase("narrow16-h1-fp16-p32", 3, 1, 1, 1, (129, 0, 2048), page=32, dtype="float16", garbage="random"),
    SanitizeCase("narrow32-sq2-causal-fp16-p32", 3, 2, 16, 1, (2, 255, 3000), page=32, dtype="float16",
                 causal=True),
    SanitizeCase("narrow32-hkv2", 2, 1, 64, 2, (1000, 17), page=128),
    SanitizeCase("seesaw-forced-for-16-rows", 2, 1, 16, 1, (80, 5000), force_seesaw=True, garbage="random"),
    SanitizeCase("wide-combine-b1-h128-20k", 1, 1, 128, 1, (20000,)),
    SanitizeCase("wide-combine-b1-h16-30k-fp16", 1, 1, 16, 1, (30000,), dtype="float16", page=16),
    SanitizeCase("many-rows-combine-b16-h128-varlen", 16, 1, 128, 1, _varlen(16, 3000, 1), garbage="random"),
    SanitizeCase("many-rows-combine-b96-h16-sq2", 96, 2, 16, 1, _varlen(96, 600, 2), page=32, causal=True),
    SanitizeCase("unsplit-b132-h128-fp16", 132, 1, 128, 1, _varlen(132, 200, 3), dtype="float16", page=128),
    SanitizeCase("all-empty", 4, 2, 64, 1, (0, 0, 0, 0)),
)


def parts_for(case: SanitizeCase, sm_count: int = SM_COUNT) -> int:
    return schedule.num_sm_parts(sm_count, case.rows, case.h_kv)


@contextlib.contextmanager
def kernel_choice(case: SanitizeCase):
    """FLASHMLA_RT_DECODE_KERNEL=seesaw while a forced case runs (the host reads it when it picks the kernel)."""
    if not case.force_seesaw:
        yield
        return
    os.environ["FLASHMLA_RT_DECODE_KERNEL"] = "seesaw"
    try:
        yield
    finally:
        os.environ.pop("FLASHMLA_RT_DECODE_KERNEL", None)


def kernels_run(case: SanitizeCase, sm_count: int = SM_COUNT) -> list[str]:
    """Names of the kernels one decode of `case` launches (the host's own choices, no GPU needed)."""
    with kernel_choice(case):
        variant = kernels.decode_variant(case.rows)
    meta, splits = schedule.plan(np.asarray(case.seqlens, dtype=np.int32), parts_for(case, sm_count))
    names = ["metadata", variant.name]
    chunks = np.diff(np.asarray(splits))
    if ((chunks == 1) & (np.asarray(case.seqlens) > 0)).any():
        names.append("(direct out)")
    if (chunks > 1).any():
        wide, _ = kernels.combine_launch(case.b, case.h_kv, case.rows)
        names.append("combine_wide" if wide else "combine_many_rows")
    return names


def run_case(case: SanitizeCase) -> str | None:
    """Decode `case` on the GPU both ways; None if both match the reference, else what is wrong."""
    import torch
    with kernel_choice(case):
        gcase = gc.make_case(case.b, case.s_q, case.h_q, case.h_kv, np.asarray(case.seqlens), page=case.page,
                             dtype=case.dtype, causal=case.causal, garbage=case.garbage,
                             extra_cols=case.extra_cols, seed=len(case.name))
        out, lse = gc.poisoned_outputs(gcase)
        gc.run(gcase, out=out, lse=lse)
        out2, lse2 = gc.run(gcase)
        torch.cuda.synchronize()
    out_ref, lse_ref = gc.reference(gcase)
    for label, (o, l) in (("out=", (out, lse)), ("planned", (out2, lse2))):
        try:
            gc.check_close(o, l, out_ref, lse_ref, gcase.dtype, f"{case.name} {label}")
        except AssertionError as e:
            return str(e)
    return None


def main(argv: list[str]) -> int:
    if "--list" in argv:
        for case in CASES:
            print(f"{case.name:40s} rows {case.rows:4d}  {' '.join(kernels_run(case))}")
        return 0
    import flashmla_rt
    if not flashmla_rt.hopper_available():
        print("sanitize_cases: needs a Hopper GPU", file=sys.stderr)
        return 2
    from flashmla_rt import _fastpath
    failed = 0
    for case in CASES:
        _fastpath._plans.clear()        # a forced-seesaw plan must not serve a later case, nor the reverse
        problem = run_case(case)
        print(f"{case.name}: {'ok' if problem is None else 'WRONG: ' + problem}", flush=True)
        failed += problem is not None
    print(f"sanitize_cases: {len(CASES) - failed} of {len(CASES)} cases match the reference")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
