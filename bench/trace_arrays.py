"""A trace build's device arrays (kernels compiled with -DFMLA_TRACE=1) as CuPy views, for the trace scripts."""
import cupy
import numpy as np

from flashmla_rt.jit import module

# fmla_trace_cta of common/trace_cta.cuh: per CTA (linear id < 4096) its start, end, blocks done / wait over (ns)
# and its SM id.
CTA_MARKS_SHAPE = (4096, 4)


def trace_array(source: str, name: str, shape: tuple):
    """The uint64 global `name` of the loaded module of `source` (device 0) as a CuPy view of `shape`."""
    mod = module._modules[(source, 0)]
    g = mod.get_global_var(name)
    addr = g[0] if isinstance(g, tuple) else getattr(g, "ptr", g)
    nbytes = int(np.prod(shape)) * 8
    mem = cupy.cuda.MemoryPointer(cupy.cuda.UnownedMemory(int(addr), nbytes, mod), 0)
    return cupy.ndarray(shape, cupy.uint64, mem)
