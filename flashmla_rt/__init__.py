"""flashmla_rt: FlashMLA-compatible MLA decoding attention for Hopper GPUs, compiled at import time with NVRTC.

    meta, splits = flashmla_rt.get_mla_metadata(cache_seqlens, s_q * h_q // h_kv, h_kv)
    out, lse = flashmla_rt.flash_mla_with_kvcache(q, k_cache, block_table, cache_seqlens, 512, meta, splits,
                                                  causal=True)

Importing on a machine with a compute-capability 9.0 GPU compiles every kernel (first time) or finds it in
the disk cache; elsewhere compilation is deferred and `import flashmla_rt` still works.
Set FLASHMLA_RT_LAZY=1 to defer it on Hopper machines too.
"""
import os as _os

__version__ = "0.1.0"

from .interface import flash_mla_with_kvcache, get_mla_metadata  # noqa: E402
from ._device import hopper_available  # noqa: E402

__all__ = ["get_mla_metadata", "flash_mla_with_kvcache", "hopper_available", "__version__"]


def _compile_kernels_at_import() -> None:
    """On a machine with a compute-capability 9.0 GPU, compile every kernel (first time, one line on stderr
    each) or find it in the disk cache, in a background thread started here; the first launch waits for it.
    Loading into the GPU context happens on first use."""
    if _os.environ.get("FLASHMLA_RT_LAZY") == "1":
        return
    from .kernels import start_background_compile
    start_background_compile()


_compile_kernels_at_import()
