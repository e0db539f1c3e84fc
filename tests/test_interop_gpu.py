"""Framework interop on the GPU: torch, CuPy and JAX callers, the caller's current stream, CUDA graphs,
and results that are fresh caller-framework arrays (no copies, FlashMLA's shapes).

Cases are built with torch (gpu_cases) and handed to the other frameworks zero-copy (CuPy) or through
host memory (JAX, which owns its buffers); every result is compared to the NumPy reference.
"""
import os

import numpy as np
import pytest

import gpu_cases as gc
from flashmla_rt import schedule

pytestmark = pytest.mark.gpu

SLEEP_CYCLES = 200_000_000      # ~0.1 s of GPU spinning: long enough for misplaced work to overtake


@pytest.fixture(scope="module")
def cupy():
    return pytest.importorskip("cupy")


@pytest.fixture(scope="module")
def jax():
    # JAX grabs 75 % of GPU memory at start-up by default, starving torch/CuPy in the same process.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    jax = pytest.importorskip("jax")
    try:
        jax.devices("gpu")
    except RuntimeError as e:
        pytest.skip(f"JAX has no usable GPU backend: {e}")
    return jax


def small_case(dtype="bfloat16", causal=True, seed=0):
    """b=6 varlen around 4096 with a zero-length request: splits, combine and empty rows in one case."""
    seqlens = gc.lengths(6, 4096, 2, varlen=True, seed=seed)
    seqlens[3] = 0
    return gc.make_case(6, 2, 64, 2, seqlens, page=64, dtype=dtype, causal=causal, seed=seed)


def host_native(t):
    """torch GPU tensor -> NumPy array of the same dtype (bf16 as ml_dtypes.bfloat16), for JAX."""
    import ml_dtypes
    import torch
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


# ----------------------------------------------------------------------------------- frameworks
def test_torch_results(torch):
    import flashmla_rt
    case = small_case()
    meta, splits = flashmla_rt.get_mla_metadata(case.cache_seqlens, case.rows, case.h_kv)
    out, lse = flashmla_rt.flash_mla_with_kvcache(case.q, case.k_cache, case.block_table, case.cache_seqlens,
                                                  gc.DV, meta, splits, causal=True)
    for x in (meta, splits, out, lse):
        assert isinstance(x, torch.Tensor) and x.device == case.q.device
    assert out.dtype == case.q.dtype and lse.dtype == torch.float32
    gc.check_close(out, lse, *gc.reference(case), case.dtype)


def assert_metadata_matches_plan(meta, splits, case, to_numpy):
    """Device metadata equals the NumPy twin's plan for the same lengths and part count."""
    want_meta, want_splits = schedule.plan(case.seqlens, meta.shape[0])
    np.testing.assert_array_equal(to_numpy(meta), want_meta)
    np.testing.assert_array_equal(to_numpy(splits), want_splits)


@pytest.mark.parametrize("dtype", gc.DTYPES)
def test_cupy_inputs(torch, cupy, dtype):
    import flashmla_rt
    case = small_case(dtype)
    torch.cuda.synchronize()                    # the CuPy views below must see finished torch writes
    as_cp = cupy.from_dlpack
    q, k, table, seqlens = (as_cp(x) for x in (case.q, case.k_cache, case.block_table, case.cache_seqlens))
    meta, splits = flashmla_rt.get_mla_metadata(seqlens, case.rows, case.h_kv)
    assert isinstance(meta, cupy.ndarray) and isinstance(splits, cupy.ndarray)
    assert_metadata_matches_plan(meta, splits, case, cupy.asnumpy)

    out, lse = flashmla_rt.flash_mla_with_kvcache(q, k, table, seqlens, gc.DV, meta, splits, causal=True)
    assert isinstance(out, cupy.ndarray) and isinstance(lse, cupy.ndarray)
    assert out.device.id == q.device.id and out.dtype == q.dtype and lse.dtype == np.float32
    assert out.shape == (case.b, case.s_q, case.h_q, gc.DV) and lse.shape == (case.b, case.h_q, case.s_q)
    out_ref, lse_ref = gc.reference(case)
    gc.check_close(out, lse, out_ref, lse_ref, dtype, "cupy")

    # Preallocated CuPy outputs (poisoned through torch, which fills any dtype) are written in place.
    out_t, lse_t = gc.poisoned_outputs(case)
    torch.cuda.synchronize()
    out_p, lse_p = as_cp(out_t), as_cp(lse_t)
    ret_out, ret_lse = flashmla_rt.flash_mla_with_kvcache(q, k, table, seqlens, gc.DV, meta, splits, causal=True,
                                                          out=out_p, lse=lse_p)
    assert ret_out.data.ptr == out_p.data.ptr and ret_lse.data.ptr == lse_p.data.ptr
    gc.check_close(out_p, lse_p, out_ref, lse_ref, dtype, "cupy out=")


@pytest.mark.parametrize("dtype", gc.DTYPES)
def test_jax_inputs(torch, jax, dtype):
    import flashmla_rt
    case = small_case(dtype)
    dev = jax.devices("gpu")[0]
    q, k, table, seqlens = (jax.device_put(host_native(x), dev)
                            for x in (case.q, case.k_cache, case.block_table, case.cache_seqlens))
    meta, splits = flashmla_rt.get_mla_metadata(seqlens, case.rows, case.h_kv)
    assert isinstance(meta, jax.Array) and isinstance(splits, jax.Array)
    assert_metadata_matches_plan(meta, splits, case, np.asarray)

    out, lse = flashmla_rt.flash_mla_with_kvcache(q, k, table, seqlens, gc.DV, meta, splits, causal=True)
    assert isinstance(out, jax.Array) and isinstance(lse, jax.Array)
    assert out.devices() == {dev} and lse.devices() == {dev}
    assert gc.dtype_name(out.dtype) == dtype and np.dtype(lse.dtype) == np.float32
    assert out.shape == (case.b, case.s_q, case.h_q, gc.DV) and lse.shape == (case.b, case.h_q, case.s_q)
    gc.check_close(out, lse, *gc.reference(case), dtype, "jax")


# --------------------------------------------------------------------------------------- streams
def _replacement_q(torch, case, seed):
    """New random data for case.q, to be copied in on the stream under test."""
    return gc.random_tensor(tuple(case.q.shape), case.dtype, "randn10",
                            torch.Generator(device="cuda").manual_seed(seed), "cuda")


def _non_blocking_torch_stream(torch, cupy):
    """(the CuPy non-blocking stream, the torch ExternalStream over it); keep both alive while in use."""
    raw = cupy.cuda.Stream(non_blocking=True)
    return raw, torch.cuda.ExternalStream(raw.ptr)


@pytest.mark.parametrize("kind", ["torch", "non_blocking"])
def test_torch_current_stream(torch, cupy, kind):
    """Work is queued on the caller's current torch stream: the stream is kept busy, then q is overwritten
    and out re-poisoned on it; kernels placed on any other stream would read the old q or be overwritten.

    kind "torch": a torch.cuda.Stream(). Those are blocking streams, which the legacy default stream waits
    for, so work misplaced there would still come out right; kind "non_blocking" (a CuPy non-blocking stream
    made current in torch) is the one that catches it."""
    case = small_case(seed=1)
    new_q = _replacement_q(torch, case, 99)
    out, lse = gc.poisoned_outputs(case)
    torch.cuda.synchronize()
    if kind == "torch":
        stream = torch.cuda.Stream()
    else:
        raw, stream = _non_blocking_torch_stream(torch, cupy)   # raw kept alive by this frame until the end
    with torch.cuda.stream(stream):
        torch.cuda._sleep(SLEEP_CYCLES)
        case.q.copy_(new_q)
        out.fill_(float("nan"))
        lse.fill_(float("nan"))
        # check_seqlens=False: its host sync would hide misplaced work.
        gc.run(case, out=out, lse=lse, check_seqlens=False)
    stream.synchronize()
    gc.check_close(out, lse, *gc.reference(case), case.dtype, "non-default torch stream")


def test_planned_call_on_current_stream(torch, cupy):
    """The cached-plan path (no out=/lse=) also queues on the caller's current stream: a non-blocking stream kept
    busy, with q overwritten on it before the call. A launch on any other stream would read the old q."""
    from flashmla_rt import _fastpath
    case = small_case(seed=3)
    gc.run(case, check_seqlens=False)                   # makes the plan
    new_q = _replacement_q(torch, case, 98)
    torch.cuda.synchronize()
    raw, stream = _non_blocking_torch_stream(torch, cupy)
    plans = dict(_fastpath._plans)
    with torch.cuda.stream(stream):
        torch.cuda._sleep(SLEEP_CYCLES)
        case.q.copy_(new_q)
        out, lse = gc.run(case, check_seqlens=False)
    # the planned path ran: a full-path call would have left a new plan object under its signature
    assert plans and all(_fastpath._plans.get(sig) is plan for sig, plan in plans.items())
    stream.synchronize()
    gc.check_close(out, lse, *gc.reference(case), case.dtype, "planned call, non-default stream")


def test_cupy_current_stream(torch, cupy):
    """Same for CuPy callers: work goes on CuPy's current stream."""
    import flashmla_rt
    case = small_case(seed=2)
    new_q = _replacement_q(torch, case, 98)
    out_t, lse_t = gc.poisoned_outputs(case)
    torch.cuda.synchronize()
    q, k, table, seqlens, out, lse = (cupy.from_dlpack(x) for x in (
        case.q, case.k_cache, case.block_table, case.cache_seqlens, out_t, lse_t))
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        with torch.cuda.stream(torch.cuda.ExternalStream(stream.ptr)):     # torch ops on CuPy's stream
            torch.cuda._sleep(SLEEP_CYCLES)
            case.q.copy_(new_q)
            out_t.fill_(float("nan"))
        meta, splits = flashmla_rt.get_mla_metadata(seqlens, case.rows, case.h_kv)
        flashmla_rt.flash_mla_with_kvcache(q, k, table, seqlens, gc.DV, meta, splits, causal=True, out=out,
                                           lse=lse, check_seqlens=False)
    stream.synchronize()
    gc.check_close(out, lse, *gc.reference(case), case.dtype, "non-default CuPy stream")


# ----------------------------------------------------------------------------------- CUDA graphs
@pytest.mark.parametrize("dtype", gc.DTYPES)
def test_cuda_graph_capture(torch, dtype):
    """Capture metadata + decode in one torch CUDA graph, replay with new q (and shorter cache_seqlens)
    copied into the captured inputs; each replay must match the reference for the new values."""
    import flashmla_rt
    case = small_case(dtype, seed=3)

    def step():
        meta, splits = flashmla_rt.get_mla_metadata(case.cache_seqlens, case.rows, case.h_kv)
        return flashmla_rt.flash_mla_with_kvcache(case.q, case.k_cache, case.block_table, case.cache_seqlens,
                                                  gc.DV, meta, splits, causal=True)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):               # warm-up on a side stream, as torch's graph docs require
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, lse = step()

    gen = torch.Generator(device="cuda").manual_seed(123)
    for trial in range(2):
        case.q.copy_(gc.random_tensor(tuple(case.q.shape), dtype, "randn10", gen, "cuda"))
        out.fill_(float("nan"))
        lse.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        gc.check_close(out, lse, *gc.reference(case), dtype, f"graph replay {trial} (new q)")

    # Shorter requests: a prefix of each request's keys stays valid, the captured metadata kernel re-plans.
    shorter = (case.seqlens // 3).astype(np.int32)
    shorter[0] = 1
    case.cache_seqlens.copy_(torch.as_tensor(shorter))
    case.q.copy_(gc.random_tensor(tuple(case.q.shape), dtype, "randn10", gen, "cuda"))
    graph.replay()
    torch.cuda.synchronize()
    gc.check_close(out, lse, *gc.reference(case, seqlens=shorter), dtype, "graph replay (new cache_seqlens)")


# ---------------------------------------------------------------------------------- fresh results
def test_fresh_outputs(torch):
    """Without out=/lse=, results are new contiguous tensors on q's device (no aliasing of inputs or of an
    earlier call's results), in FlashMLA's shapes: out [b, s_q, h_q, 512], lse [b, h_q, s_q]."""
    case = small_case(seed=4)
    out1, lse1 = gc.run(case)
    out2, lse2 = gc.run(case)
    inputs = {case.q.data_ptr(), case.k_cache.data_ptr(), case.block_table.data_ptr(),
              case.cache_seqlens.data_ptr()}
    ptrs = [out1.data_ptr(), lse1.data_ptr(), out2.data_ptr(), lse2.data_ptr()]
    assert len(set(ptrs)) == 4 and not inputs & set(ptrs)
    for out, lse in ((out1, lse1), (out2, lse2)):
        assert tuple(out.shape) == (case.b, case.s_q, case.h_q, gc.DV) and out.is_contiguous()
        assert tuple(lse.shape) == (case.b, case.h_q, case.s_q) and lse.is_contiguous()
        assert out.device == case.q.device and lse.device == case.q.device
    gc.check_close(out1, lse1, *gc.reference(case), case.dtype, "fresh outputs")
    gc.assert_bitwise_equal(out2, out1, "out of the second call")


# ----------------------------------------------------------------------------------- launch plans
def test_planned_calls_follow_new_data(torch):
    """Repeat calls with one signature take the cached plan: new q and lengths give new correct results, and
    a misaligned q view (same signature, pointer off by 2 bytes) still gets the full path's error."""
    import flashmla_rt
    from flashmla_rt import _fastpath
    case = small_case()
    meta, splits = flashmla_rt.get_mla_metadata(case.cache_seqlens, case.rows, case.h_kv)
    args = (case.k_cache, case.block_table, case.cache_seqlens, gc.DV, meta, splits)
    flashmla_rt.flash_mla_with_kvcache(case.q, *args, causal=True)
    sig = _fastpath.signature((case.q, case.k_cache, case.block_table, case.cache_seqlens, meta, splits),
                              gc.DV, None, True)
    assert _fastpath.lookup(sig) is not None
    for seed in (1, 2):
        q2 = torch.randn_like(case.q) * 3
        out, lse = flashmla_rt.flash_mla_with_kvcache(q2, *args, causal=True)
        gc.check_close(out, lse, *gc.reference(case, q=q2), case.dtype, context=f"seed {seed}")
    flat = torch.empty(case.q.numel() + 1, dtype=case.q.dtype, device=case.q.device)
    shifted = flat[1:].view(case.q.shape)
    shifted.copy_(case.q)
    with pytest.raises(ValueError, match="^q: "):
        flashmla_rt.flash_mla_with_kvcache(shifted, *args, causal=True)
