"""Host/device contract, checked on the CPU: the numbers flashmla_rt/kernels.py launches with (argument-record
layout, shared-memory bytes, block sizes) are the ones the CUDA sources were written for. The sources
static_assert them when compiled with -DFMLA_EXPECT_* (NVRTC, no GPU); a mismatch fails compilation."""
import pytest

from flashmla_rt import kernels, schedule
from flashmla_rt.jit import compiler


def expectations() -> tuple[str, ...]:
    dt = kernels.DECODE_PARAMS_DTYPE
    return (f"-DFMLA_EXPECT_PARAMS_BYTES={dt.itemsize}",
            f"-DFMLA_EXPECT_SCALE_OFFSET={dt.fields['scale_log2'][1]}",
            f"-DFMLA_EXPECT_SMEM_BYTES={kernels.DECODE_SMEM_BYTES}",
            f"-DFMLA_EXPECT_THREADS={kernels.DECODE_THREADS}",
            f"-DFMLA_EXPECT_NARROW16_SMEM_BYTES={kernels.NARROW16.smem_bytes}",
            f"-DFMLA_EXPECT_NARROW32_SMEM_BYTES={kernels.NARROW32.smem_bytes}",
            f"-DFMLA_EXPECT_NARROW_THREADS={kernels.NARROW_THREADS}",
            f"-DFMLA_EXPECT_COMBINE_THREADS={kernels.COMBINE_THREADS}",
            f"-DFMLA_EXPECT_COMBINE_ROWS={kernels.COMBINE_ROWS_PER_CTA}",
            f"-DFMLA_EXPECT_COMBINE_COLUMN_SPLITS={kernels.COMBINE_COLUMN_SPLITS}",
            f"-DFMLA_EXPECT_CHUNK_OVERHEAD={schedule.FIXED_OVERHEAD}",
            f"-DFMLA_EXPECT_NO_CUT_SLACK={schedule.NO_CUT_SLACK_PERCENT}",
            f"-DFMLA_EXPECT_BLOCK_N={schedule.BLOCK_N}",
            f"-DFMLA_EXPECT_ORDER_IDS_PER_ROW={schedule.ORDER_IDS_PER_ROW}",
            f"-DFMLA_EXPECT_REORDER_MAX_BATCH={schedule.REORDER_MAX_BATCH}",
            f"-DFMLA_EXPECT_LENGTH_TABLE_SIZE={schedule.LENGTH_TABLE_SIZE}",
            f"-DFMLA_EXPECT_BEST_FIT_SPAN={schedule.BEST_FIT_SPAN_PERCENT}",
            f"-DFMLA_EXPECT_BEST_FIT_MAX_PARTS={schedule.BEST_FIT_MAX_PARTS}")


@pytest.mark.parametrize("src", [kernels.DECODE_SOURCE, kernels.NARROW_SOURCE, kernels.COMBINE_SOURCE,
                                 kernels.METADATA_SOURCE])
def test_host_numbers_match_the_sources(src):
    compiler.compile_source(src, expectations(), use_cache=False, quiet=True)


@pytest.mark.parametrize("flag, message", [
    ("-DFMLA_EXPECT_PARAMS_BYTES", "DecodeParams size differs"),
    ("-DFMLA_EXPECT_COMBINE_ROWS", "COMBINE_ROWS_PER_CTA differs"),
    ("-DFMLA_EXPECT_CHUNK_OVERHEAD", "FIXED_OVERHEAD differs"),
    ("-DFMLA_EXPECT_REORDER_MAX_BATCH", "REORDER_MAX_BATCH differs"),
])
def test_a_mismatch_fails_compilation(flag, message):
    """The checks are live: one wrong number and NVRTC refuses the source, naming what differs."""
    opts = tuple(o if not o.startswith(flag + "=") else f"{flag}=12345" for o in expectations())
    src = kernels.METADATA_SOURCE if "CHUNK" in flag or "REORDER" in flag else kernels.COMBINE_SOURCE
    with pytest.raises(compiler.CompileError, match=message):
        compiler.compile_source(src, opts, use_cache=False, quiet=True)
