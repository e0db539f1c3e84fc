"""The launch plan's per-call argument buffer (CPU only): the record it packs is byte for byte the one
`kernels.decode_params` builds from the same pointers (the full path's record), and the kernelParams entries
point at the tensor maps and at that record."""
import ctypes
import random
import sys
import types

import numpy as np
import pytest

from flashmla_rt import _fastpath, kernels

RECORD_BYTES = kernels.DECODE_PARAMS_DTYPE.itemsize
OTHER_FIELDS = [f for f in kernels.DECODE_PARAMS_FIELDS if f not in _fastpath.POINTER_FIELDS]


def random_record_args(rng: random.Random) -> dict:
    """Every non-pointer field, as interface._launch_decode passes them (ints, then the float scale)."""
    args = {f: rng.randrange(-2**40, 2**40) for f in OTHER_FIELDS}
    args["scale_log2"] = rng.uniform(0.01, 1.0)
    return args


def random_pointers(rng: random.Random) -> dict:
    return {f: rng.randrange(1, 2**47) * 16 for f in _fastpath.POINTER_FIELDS}


def tensor_maps(rng: random.Random, n: int) -> list:
    return [np.frombuffer(rng.randbytes(128), np.uint8).copy() for _ in range(n)]


def read_kernel_params(address: int, n: int) -> list:
    """What the driver reads at kernelParams: n argument addresses."""
    return list((ctypes.c_uint64 * n).from_address(address))


@pytest.mark.parametrize("n_maps", [1, 2])
@pytest.mark.parametrize("seed", range(5))
def test_kernel_args_equal_decode_params(n_maps, seed):
    rng = random.Random(seed)
    rest, ptrs, maps = random_record_args(rng), random_pointers(rng), tensor_maps(rng, n_maps)
    full_path = kernels.decode_params(**ptrs, **rest).tobytes()
    template = kernels.decode_params(**dict.fromkeys(_fastpath.POINTER_FIELDS, 0), **rest).tobytes()
    args = _fastpath.KernelArgs(template, n_maps)
    buf = args.build(tuple(m.ctypes.data for m in maps), tuple(ptrs[f] for f in _fastpath.POINTER_FIELDS))

    entries = read_kernel_params(ctypes.addressof(buf), n_maps + 1)
    for entry, m in zip(entries, maps):
        assert ctypes.string_at(entry, 128) == m.tobytes()
    assert ctypes.string_at(entries[-1], RECORD_BYTES) == full_path
    # The combine's kernelParams: the slot holding the record's address.
    (combine_entry,) = read_kernel_params(ctypes.addressof(buf) + args.record_offset - 8, 1)
    assert combine_entry == entries[-1]
    assert ctypes.addressof(buf) % 8 == 0 and entries[-1] % 8 == 0


def test_each_build_is_a_fresh_buffer():
    rng = random.Random(7)
    rest = random_record_args(rng)
    template = kernels.decode_params(**dict.fromkeys(_fastpath.POINTER_FIELDS, 0), **rest).tobytes()
    args = _fastpath.KernelArgs(template, 2)
    p1, p2 = random_pointers(rng), random_pointers(rng)
    b1 = args.build((1, 2), tuple(p1.values()))
    b2 = args.build((3, 4), tuple(p2.values()))
    assert ctypes.addressof(b1) != ctypes.addressof(b2)
    assert bytes(b1)[24:] == kernels.decode_params(**p1, **rest).tobytes()     # untouched by the second build
    assert bytes(b2)[24:] == kernels.decode_params(**p2, **rest).tobytes()


def test_kernel_args_rejects_a_record_of_another_size():
    with pytest.raises(ValueError):
        _fastpath.KernelArgs(bytes(RECORD_BYTES - 8), 2)


class FakeTensor:
    __module__ = "torch"

    def __init__(self, ptr):
        self.ptr = ptr

    def data_ptr(self):
        return self.ptr


@pytest.mark.parametrize("n_maps", [1, 2])
def test_plan_kernel_params_equal_decode_params(monkeypatch, route_dependent_launches, n_maps):
    """Through LaunchPlan (torch and the kernels replaced by stand-ins): the record of each call carries that
    call's pointers, with lse_accum right after o_accum in the workspace, and the kernel maps of its cache."""
    fake = types.ModuleType("torch")
    fake.bfloat16, fake.float32 = "bf16", "f32"
    fake.device = lambda *a: ("cuda",) + a
    fake.empty = lambda *a, **k: None
    monkeypatch.setitem(sys.modules, "torch", fake)
    monkeypatch.setattr(kernels, "decode_kernel", lambda d, dev, v: types.SimpleNamespace(ptr=11))
    monkeypatch.setattr(kernels, "combine_kernel", lambda d, dev, wide: types.SimpleNamespace(ptr=22))
    rng = random.Random(n_maps)
    maps_of, made = {}, []

    def kv_maps(kp, shape, strides):
        made.append(kp)
        return maps_of.setdefault(kp, tuple(tensor_maps(rng, n_maps)))
    rest, o_accum_elems = random_record_args(rng), 4096
    plan = _fastpath.LaunchPlan(
        device=0, out_shape=(1, 1, 16, 512), out_dtype="bfloat16", lse_shape=(1, 16, 1), o_accum_elems=o_accum_elems,
        lse_accum_elems=16, record=kernels.decode_params(**dict.fromkeys(_fastpath.POINTER_FIELDS, 0), **rest),
        decode_grid=(1, 1, 2), combine_grid=(1, 2), k_shape=(4, 64, 1, 576), k_strides=(36864, 576, 576, 1),
        variant=kernels.SEESAW._replace(kv_maps=kv_maps))
    launches = []
    monkeypatch.setattr(_fastpath, "_launch_kernel", lambda *a: launches.append(a))
    route_dependent_launches(lambda *a: launches.append(a))
    for kp in (0x10000, 0x10000, 0x20000, 0x10000):   # each cache's maps are made once (layers taken in turn)
        ptrs = random_pointers(rng)
        ptrs["kcache"], ptrs["lse_accum"] = kp, ptrs["o_accum"] + 4 * o_accum_elems
        tensors = [FakeTensor(ptrs[f]) for f in ("q", "kcache", "block_table", "seqlens", "sched_meta", "num_splits",
                                                   "out", "lse", "o_accum")]
        params = plan.kernel_params(*tensors)
        entries = read_kernel_params(ctypes.addressof(params), n_maps + 1)
        assert [ctypes.string_at(e, 128) for e in entries[:-1]] == [m.tobytes() for m in maps_of[kp]]
        assert ctypes.string_at(entries[-1], RECORD_BYTES) == kernels.decode_params(**ptrs, **rest).tobytes()

        launches.clear()
        plan.launch_decode(params, 5)
        plan.launch_combine(params, 5)
        decode, combine = launches
        assert decode[:-3] == (11, 1, 1, 2, kernels.DECODE_THREADS, 1, 1, kernels.DECODE_SMEM_BYTES)
        assert decode[-3:] == (5, ctypes.addressof(params), 0)
        assert combine[:-3] == (22, 1, 2, 1, kernels.COMBINE_THREADS, 1, 1, 0) and combine[-3] == 5
        assert read_kernel_params(combine[-2], 1) == entries[-1:]
    assert made == [0x10000, 0x20000]
