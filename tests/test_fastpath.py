"""Launch plans (CPU part): which calls get a signature, and the pointer patching of the argument record."""
import ctypes

import numpy as np

from flashmla_rt import _fastpath, kernels


def test_non_torch_calls_get_no_signature():
    a = np.zeros((2, 3), np.int32)
    assert _fastpath.signature((a, a), 512, None, False) is None
    assert _fastpath.lookup(None) is None


def test_pointer_fields_patch_the_record():
    others = {f: i + 100 for i, f in enumerate(kernels.DECODE_PARAMS_FIELDS) if f not in _fastpath.POINTER_FIELDS}
    rec = kernels.decode_params(**dict.fromkeys(_fastpath.POINTER_FIELDS, 0), **others, scale_log2=0.5)
    ptrs = tuple(0x7F0000000000 + 256 * i for i in range(len(_fastpath.POINTER_FIELDS)))
    ptr_index = [kernels.DECODE_PARAMS_FIELDS.index(f) for f in _fastpath.POINTER_FIELDS]
    rec.view(np.int64)[ptr_index] = ptrs
    fields = rec.view(kernels.DECODE_PARAMS_DTYPE)[0]
    for name, want in zip(_fastpath.POINTER_FIELDS, ptrs):
        assert fields[name] == want, name
    for name, want in others.items():
        assert fields[name] == want, name
    assert fields["scale_log2"] == np.float32(0.5)


def test_plan_cache_is_bounded():
    _fastpath._plans.clear()
    for i in range(_fastpath._MAX_PLANS + 5):
        _fastpath.remember(("sig", i), object())
    assert len(_fastpath._plans) <= _fastpath._MAX_PLANS
    _fastpath._plans.clear()


def test_plan_launch_with_stand_ins(monkeypatch, route_dependent_launches):
    """Build and launch a plan against stand-ins for torch and the kernels: both launches get the patched record,
    the workspace split and the caller's stream."""
    import sys
    import types
    fake = types.ModuleType("torch")
    fake.bfloat16, fake.float32 = "bf16", "f32"

    class FakeTensor:
        __module__ = "torch"

        def __init__(self, n):
            self.n = n

        def data_ptr(self):
            return 4096 * (1 + self.n)

        def new_empty(self, shape, dtype=None):     # the plan allocates out, lse and the workspace like q
            return FakeTensor(7)
    monkeypatch.setitem(sys.modules, "torch", fake)
    calls = []

    def launch_kernel(fn, gx, gy, gz, bx, by, bz, smem, stream, params, extra):
        # Read what the driver would: kernelParams -> pointers -> argument bytes (copied now, as cuLaunchKernel does).
        n = 3 if fn == 11 else 1
        ptrs = (ctypes.c_uint64 * n).from_address(params)
        sizes = (128, 128, kernels.DECODE_PARAMS_DTYPE.itemsize) if n == 3 else (kernels.DECODE_PARAMS_DTYPE.itemsize,)
        calls.append((fn, (gx, gy, gz), (bx, by, bz), smem, stream, [ctypes.string_at(p, z) for p, z in zip(ptrs, sizes)]))

    kv_map = np.frombuffer(bytes(range(128)), np.uint8).copy()
    monkeypatch.setattr(_fastpath, "_launch_kernel", launch_kernel)
    route_dependent_launches(launch_kernel)          # the combine: cuLaunchKernelEx (PDL)
    monkeypatch.setattr(kernels, "decode_kernel", lambda d, dev, v: types.SimpleNamespace(ptr=11))
    monkeypatch.setattr(kernels, "combine_kernel", lambda d, dev, wide: types.SimpleNamespace(ptr=22))
    others = {f: 1 for f in kernels.DECODE_PARAMS_FIELDS if f not in _fastpath.POINTER_FIELDS}
    rec = kernels.decode_params(**dict.fromkeys(_fastpath.POINTER_FIELDS, 0), **others, scale_log2=0.1)
    plan = _fastpath.LaunchPlan(device=0, out_shape=(1, 1, 16, 512), out_dtype="bfloat16", lse_shape=(1, 16, 1),
                                o_accum_elems=1024, lse_accum_elems=4, record=rec, decode_grid=(1, 1, 2),
                                combine_grid=(1, 2), k_shape=(4, 64, 1, 576), k_strides=(36864, 576, 576, 1),
                                variant=kernels.SEESAW._replace(kv_maps=lambda *a: (kv_map, kv_map[::-1].copy())))
    assert plan.launch(*(FakeTensor(i) for i in range(1, 7)), 123) is not None
    (dfn, dgrid, dblock, dsmem, dstream, dargs), (cfn, cgrid, cblock, csmem, cstream, cargs) = calls
    assert (dfn, dgrid, dblock, dsmem, dstream) == (11, (1, 1, 2), (kernels.DECODE_THREADS, 1, 1),
                                                    kernels.DECODE_SMEM_BYTES, 123)
    assert (cfn, cgrid, cblock, csmem, cstream) == (22, (1, 2, 1), (kernels.COMBINE_THREADS, 1, 1), 0, 123)
    assert dargs[0] == kv_map.tobytes() and dargs[1] == kv_map[::-1].tobytes()
    fields = np.frombuffer(dargs[2], kernels.DECODE_PARAMS_DTYPE)[0]
    assert [int(fields[f]) for f in ("q", "kcache", "num_splits", "out")] == [8192, 12288, 28672, 32768]
    assert int(fields["lse_accum"]) == int(fields["o_accum"]) + 4 * 1024
    assert fields["scale_log2"] == np.float32(0.1) and int(fields["batch"]) == 1
    assert cargs[0] == dargs[2]


def test_misaligned_pointer_declines_the_plan(monkeypatch):
    class Odd:
        __module__ = "torch"

        def data_ptr(self):
            return 4098
    plan = _fastpath.LaunchPlan.__new__(_fastpath.LaunchPlan)
    assert plan.launch(Odd(), Odd(), None, None, None, None, 0) is None


def test_torch_stream_pointer_with_and_without_the_raw_getter(monkeypatch):
    """current_stream("torch", d) reads torch's raw-stream getter where torch has one, and falls back to
    torch.cuda.current_stream(d).cuda_stream where it does not (stand-ins for both torch builds)."""
    import sys
    import types
    from flashmla_rt import _interop
    seen = []
    fast = types.ModuleType("torch")
    fast._C = types.SimpleNamespace(_cuda_getCurrentRawStream=lambda d: seen.append(("raw", d)) or 1000 + d)
    slow = types.ModuleType("torch")
    slow._C = types.SimpleNamespace()
    slow.cuda = types.SimpleNamespace(
        current_stream=lambda d: seen.append(("stream", d)) or types.SimpleNamespace(cuda_stream=2000 + d))
    for fake, want, kind in ((fast, 1003, "raw"), (slow, 2003, "stream")):
        monkeypatch.setitem(sys.modules, "torch", fake)
        monkeypatch.setattr(_interop, "_torch_stream_ptr", None)     # the getter is chosen at the first call
        seen.clear()
        assert _interop.current_stream("torch", 3).ptr == want
        assert _interop.current_stream("torch", 3).ptr == want
        assert seen == [(kind, 3), (kind, 3)]
