"""Launch plans (CPU part): which calls get a signature, and the pointer patching of the argument record."""
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
    rec.view(np.int64)[_fastpath._PTR_INDEX] = ptrs
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
