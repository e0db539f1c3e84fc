"""flashmla_rt: FlashMLA-compatible MLA decoding attention for Hopper, compiled at import time with NVRTC."""
__version__ = "0.1.0"
