"""Which GPUs we can run on, and their properties (cached: queried once per process)."""
from __future__ import annotations

from functools import lru_cache

HOPPER_CC = (9, 0)


@lru_cache(maxsize=1)
def hopper_devices() -> tuple[int, ...]:
    """Indices of compute-capability 9.0 GPUs; () when CuPy, the driver or a GPU is missing."""
    try:
        import cupy
        n = cupy.cuda.runtime.getDeviceCount()
        found = []
        for i in range(n):
            props = cupy.cuda.runtime.getDeviceProperties(i)
            if (props["major"], props["minor"]) == HOPPER_CC:
                found.append(i)
        return tuple(found)
    except Exception:                     # no CuPy, no driver (CPU machine), no device
        return ()


def hopper_available() -> bool:
    return bool(hopper_devices())


def require_hopper(device: int) -> None:
    if device not in hopper_devices():
        try:
            import cupy
            props = cupy.cuda.runtime.getDeviceProperties(device)
            what = f"{props['name'].decode() if isinstance(props['name'], bytes) else props['name']} " \
                   f"(compute capability {props['major']}.{props['minor']})"
        except Exception as e:            # noqa: BLE001 - report whatever stopped us
            what = f"no usable CUDA device ({type(e).__name__}: {e})"
        raise RuntimeError(f"flashmla_rt needs a Hopper GPU (compute capability 9.0, sm_90a) on device "
                           f"{device}; found {what}")


@lru_cache(maxsize=None)
def sm_count(device: int) -> int:
    import cupy
    return int(cupy.cuda.runtime.deviceGetAttribute(cupy.cuda.runtime.cudaDevAttrMultiProcessorCount, device))
