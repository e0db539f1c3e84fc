"""Calls whose tensors live on a second GPU (needs two Hopper GPUs; skipped otherwise).

Each call must run on the tensors' device (its kernels, its launch plan, its current stream), whatever device is
current, and leave the caller's current device as it was (torch's and CuPy's).
"""
import pytest

import gpu_cases as gc

pytestmark = pytest.mark.gpu


@pytest.fixture
def two_gpus(torch):
    """torch, with device 0 current again after the test (passed or not); skips without two Hopper GPUs."""
    from flashmla_rt import _device
    if len(_device.hopper_devices()) < 2:
        pytest.skip("needs two Hopper GPUs")
    yield torch
    torch.cuda.set_device(0)


def _current_devices():
    import cupy
    import torch
    return torch.cuda.current_device(), cupy.cuda.runtime.getDevice()


@pytest.mark.parametrize("s_q, h_q, h_kv, causal, page", [(1, 16, 1, False, 64), (2, 128, 1, True, 32),
                                                          (1, 64, 2, False, 16)])
@pytest.mark.parametrize("current", [0, 1])
def test_tensors_on_the_second_gpu(two_gpus, fresh_plans, current, s_q, h_q, h_kv, causal, page):
    torch = two_gpus
    torch.cuda.set_device(current)
    seqlens = gc.lengths(6, 4096 + 5, s_q, varlen=True, seed=h_q)
    case = gc.make_case(6, s_q, h_q, h_kv, seqlens, page=page, causal=causal, seed=h_q, device="cuda:1")
    before = _current_devices()
    assert before == (current, current)

    out, lse = gc.poisoned_outputs(case)
    gc.run(case, out=out, lse=lse)                      # the full path (out= given)
    assert _current_devices() == before
    out_ref, lse_ref = gc.reference(case)
    gc.check_close(out, lse, out_ref, lse_ref, case.dtype, f"cuda:1 with cuda:{current} current")

    for context in ("first call without out= (builds the plan)", "second call (the cached plan)"):
        out2, lse2 = gc.run(case)
        assert out2.device == torch.device("cuda", 1) and lse2.device == torch.device("cuda", 1), context
        assert _current_devices() == before, context
        gc.assert_bitwise_equal(out2, out, f"out, {context}")
        gc.assert_bitwise_equal(lse2, lse, f"lse, {context}")

    side = torch.cuda.Stream(device=1)                  # a non-default stream of device 1, current there
    side.wait_stream(torch.cuda.current_stream(1))
    with torch.cuda.stream(side):
        out3, lse3 = gc.run(case)
    side.synchronize()
    assert _current_devices() == before
    gc.assert_bitwise_equal(out3, out, "out on a side stream of cuda:1")
    gc.assert_bitwise_equal(lse3, lse, "lse on a side stream of cuda:1")


def test_same_shapes_on_both_gpus_take_their_own_plans(two_gpus, fresh_plans):
    """Two calls that differ only in the device: each device's launch plan, kernels and metadata."""
    torch = two_gpus
    torch.cuda.set_device(0)
    seqlens = gc.lengths(4, 2048, 1, varlen=True, seed=3)
    cases = [gc.make_case(4, 1, 128, 1, seqlens, seed=4 + d, device=f"cuda:{d}") for d in (0, 1)]
    for _ in range(2):                                  # the second round uses the cached plans
        for d, case in enumerate(cases):
            out, lse = gc.run(case)
            assert out.device == torch.device("cuda", d)
            out_ref, lse_ref = gc.reference(case)
            gc.check_close(out, lse, out_ref, lse_ref, case.dtype, f"cuda:{d}")
    assert _current_devices() == (0, 0)
