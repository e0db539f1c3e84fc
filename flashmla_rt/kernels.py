"""The package's kernels: which source holds which entry point, their launch shapes and argument records."""
from __future__ import annotations

import os
from typing import Callable, NamedTuple

import numpy as np

from . import schedule
from .jit import module

DECODE_SOURCE = "mla_decode_sm90.cu"
NARROW_SOURCE = "mla_decode_narrow_sm90.cu"
COMBINE_SOURCE = "mla_combine.cu"
METADATA_SOURCE = "mla_metadata.cu"
ALL_SOURCES = (METADATA_SOURCE, COMBINE_SOURCE, DECODE_SOURCE, NARROW_SOURCE)

DECODE_THREADS = 384                # two consumer warpgroups + one producer warpgroup
# Must equal seesaw::kSmemBytes in mla_decode_sm90.cu: Q + 2 KV stages (3 x 73,728) + P0 (8,192) + 6 x 256 B
# of row state + 18 "full" and 6 "empty" mbarriers + the producer's copy of the schedule (6 ints), its two
# cursors and its page ids (2 stages x 4 boxes) + a copy of scale_log2 (4 B) + 1,024 B of alignment slack.
DECODE_SMEM_BYTES = 3 * 73728 + 8192 + 6 * 256 + 18 * 8 + 6 * 8 + 6 * 4 + 2 * 4 + 2 * 4 * 4 + 4 + 1024
# The narrow kernel (few query rows per KV head): one consumer warpgroup + one producer warp. Shared memory
# must equal narrow::Plan<N>::kSmemBytes: Q and P (10 tiles of N rows) + 2 KV stages + N x 16 B of reduction
# + 4 mbarriers + 1,024 B of alignment slack.
NARROW_THREADS = 160


def narrow_smem_bytes(n: int) -> int:
    return 10 * n * 128 + 2 * 73728 + 16 * n + 4 * 8 + 1024


def _row_walk_map(kcache_ptr: int, shape: tuple, strides: tuple, box_tiles: int, l2_promotion: int):
    """5-D tensor map over the paged cache [num_blocks, page, h_kv, 576] (strides in elements) that walks token
    rows: (row elements from the head's offset, token in an 8-group, 64-column tile, 8-token group in the page,
    page), box 64 x 8 x box_tiles x min(page, 64)/8 x 1. A box lands in shared memory as
    [8-token group][box_tiles tiles][8 rows][128 B], 128-B swizzled; DRAM sees runs of box_tiles x 128 B."""
    from .jit import tma
    n_blocks, page, h_kv, d = shape
    row_elems = (h_kv - 1) * strides[2] + d           # the kernels start a row at hk * head stride
    return tma.encode_tiled_16bit(kcache_ptr, (row_elems, 8, d // 64, page // 8, n_blocks),
                                  (2 * strides[1], 128, 16 * strides[1], 2 * strides[0]),
                                  (64, 8, box_tiles, min(page, 64) // 8, 1), l2_promotion)


def kv_region_maps(kcache_ptr: int, shape: tuple, strides: tuple, l2_promotion: int | None = None) -> tuple:
    """The seesaw kernel's maps: a box of 4 tiles (a V half of a block) and a box of 1 (the RoPE tile). L2
    promotion 256 B unless given: faster where two or more m-block CTAs read each block (call 26)."""
    from .jit import tma
    if l2_promotion is None:
        l2_promotion = tma.L2_PROMOTION_256B
    return (_row_walk_map(kcache_ptr, shape, strides, 4, l2_promotion),
            _row_walk_map(kcache_ptr, shape, strides, 1, l2_promotion))


def kv_region_maps_one_mblock(kcache_ptr: int, shape: tuple, strides: tuple) -> tuple:
    """The seesaw's maps where one CTA reads each block (<= 64 rows): 128-B promotion. The region boxes read 512-B
    and 128-B pieces of 1,152-B rows; on b128 h64 8K ncu counted 2.40 GB of L2 traffic at 256 B and 1.85 GB at
    128 B, for the same 1.22 GB from DRAM (calls 76-77)."""
    from .jit import tma
    return kv_region_maps(kcache_ptr, shape, strides, tma.L2_PROMOTION_128B)


def kv_block_map(kcache_ptr: int, shape: tuple, strides: tuple) -> tuple:
    """The narrow kernel's map: a box of all 9 tiles, a whole 64-token block (a whole page below 64)."""
    from .jit import tma
    return (_row_walk_map(kcache_ptr, shape, strides, shape[3] // 64, tma.L2_PROMOTION_128B),)


class DecodeVariant(NamedTuple):
    """One decode kernel: its source, entry-point prefix (+ _bf16/_fp16), block size, shared memory and the
    tensor maps over the KV cache it takes (a function of the cache's pointer, shape and strides -> tuple)."""
    name: str
    source: str
    entry: str
    threads: int
    smem_bytes: int
    kv_maps: Callable


SEESAW = DecodeVariant("seesaw", DECODE_SOURCE, "mla_decode", DECODE_THREADS, DECODE_SMEM_BYTES, kv_region_maps)
NARROW16 = DecodeVariant("narrow16", NARROW_SOURCE, "mla_decode_narrow16", NARROW_THREADS, narrow_smem_bytes(16),
                         kv_block_map)
NARROW32 = DecodeVariant("narrow32", NARROW_SOURCE, "mla_decode_narrow32", NARROW_THREADS, narrow_smem_bytes(32),
                         kv_block_map)
SEESAW_ONE_MBLOCK = SEESAW._replace(name="seesaw_one_mblock", kv_maps=kv_region_maps_one_mblock)  # same kernel
DECODE_VARIANTS = {v.name: v for v in (SEESAW, NARROW16, NARROW32)}


def decode_variant(rows: int) -> DecodeVariant:
    """The kernel for `rows` query rows per KV head: narrow (wgmma N = 16 or 32) up to 32 rows, else seesaw (with
    its one-m-block maps up to 64 rows). FLASHMLA_RT_DECODE_KERNEL=seesaw forces the seesaw kernel (benchmarks and
    tests compare the two)."""
    if os.environ.get("FLASHMLA_RT_DECODE_KERNEL") == "seesaw" or rows > 32:
        return SEESAW if rows > schedule.BLOCK_M else SEESAW_ONE_MBLOCK
    return NARROW16 if rows <= 16 else NARROW32


COMBINE_THREADS = 256
COMBINE_ROWS_PER_CTA = 8
COMBINE_COLUMN_SPLITS = 4           # the wide combine's grid.z: each CTA merges one quarter of the 512 columns
COMBINE_WIDE_MAX_ROWS = 1024        # up to this many (request, KV head, row) rows: the 8-warps-per-row combine


def combine_launch(b: int, h_kv: int, rows: int) -> tuple:
    """(wide, grid) of the combine: few rows in all (b = 1 or 4: long requests, many splits each) get one CTA per
    row whose 8 warps share the splits; otherwise one warp per row."""
    if b * h_kv * rows <= COMBINE_WIDE_MAX_ROWS:
        return True, (b, h_kv * rows, COMBINE_COLUMN_SPLITS)
    return False, (b, -(-(h_kv * rows) // COMBINE_ROWS_PER_CTA), 1)

_SUFFIX = {"bfloat16": "bf16", "float16": "fp16"}

# Field order of fmla::DecodeParams (kernels_cu/common/decode_params.cuh); every field is 8 bytes.
DECODE_PARAMS_FIELDS = (
    "q", "kcache", "block_table", "seqlens", "sched_meta", "num_splits", "out", "lse", "o_accum", "lse_accum",
    "q_stride_b", "q_stride_s", "q_stride_h", "k_stride_block", "k_stride_token", "k_stride_head",
    "bt_stride", "bt_width", "num_cache_blocks", "page_shift", "batch", "s_q", "h_q", "h_kv", "ngroups", "rows", "causal",
)
DECODE_PARAMS_DTYPE = np.dtype([(f, np.int64) for f in DECODE_PARAMS_FIELDS]
                               + [("scale_log2", np.float32), ("scale_log2_pad", np.float32)])


_PARAMS_BYTES = np.dtype((np.void, DECODE_PARAMS_DTYPE.itemsize))


def decode_params(**fields) -> np.ndarray:
    """The record as a 1-element array of raw bytes: CuPy passes it to the kernel by value. (A structured
    dtype would make CuPy walk its field descriptions on every launch, ~20 µs.) Every field must be given."""
    fields.setdefault("scale_log2_pad", 0.0)
    rec = np.array([tuple(fields[name] for name in DECODE_PARAMS_DTYPE.names)], dtype=DECODE_PARAMS_DTYPE)
    return rec.view(_PARAMS_BYTES)


def decode_kernel(dtype: str, device: int, variant: DecodeVariant = SEESAW):
    _join_background()
    return module.get_function(variant.source, f"{variant.entry}_{_SUFFIX[dtype]}", device, variant.smem_bytes)


def combine_kernel(dtype: str, device: int, wide: bool = False):
    _join_background()
    return module.get_function(COMBINE_SOURCE, f"mla_combine_{'wide_' if wide else ''}{_SUFFIX[dtype]}", device)


def metadata_kernel(device: int):
    _join_background()
    return module.get_function(METADATA_SOURCE, "mla_metadata", device)


_background = None   # the import-time compile thread, joined before the first launch


def start_background_compile() -> None:
    """Compile every kernel in a daemon thread when a Hopper GPU is present (GPU detection and NVRTC run off
    the importing thread, so `import flashmla_rt` stays fast); errors resurface at first use."""
    global _background
    import threading
    try:   # every module the thread needs is imported here, on the importing thread: no concurrent imports
        import cupy  # noqa: F401
        import cupy._core.core  # noqa: F401
        import cupy.cuda.compiler  # noqa: F401
        import cupy.cuda.nvrtc  # noqa: F401
    except ImportError:
        return                 # no CuPy: nothing to compile with (CPU-only install)
    from ._device import hopper_devices
    from .jit import compiler  # noqa: F401

    def work():
        try:
            if hopper_devices():
                compile_all()
        except Exception:      # noqa: BLE001 - the first launch recompiles and raises with the full message
            pass
    _background = threading.Thread(target=work, name="flashmla_rt-compile", daemon=True)
    _background.start()


def _join_background() -> None:
    global _background
    if _background is not None:
        _background.join()
        _background = None


def compile_all() -> None:
    """Compile every kernel source (or find it in the disk cache); needs NVRTC but no GPU context."""
    from .jit import compiler
    for src in ALL_SOURCES:
        compiler.compile_source(src)
