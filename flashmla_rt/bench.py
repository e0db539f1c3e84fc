"""`python -m flashmla_rt bench`: time flash_mla_with_kvcache on the H200 baseline grid, optionally beside FlashMLA.

Grid, inputs, formulas and timing follow docs/baseline-h200.md (the lead's copy: /work/shared/docs):
  - rows (b, s_q, h_q, s_k, varlen); h_kv = 1, causal = True, page 64, bf16, d = 576, dv = 512;
  - q, KV ~ N(0, 1); block table = a random permutation of all b * max_blocks blocks; varlen lengths
    max(N(s_k, s_k/2), s_q) as int (Python `random.Random(seed)`, like FlashMLA's test); reseeded per row;
  - FLOPs = 2 * s_q * sum(seqlens) * h_q * (576 + 512);
    bytes = 2 * (sum(seqlens) * h_kv * 576 + b * s_q * h_q * (576 + 512));
  - metadata computed once, outside the timed region;
  - eager: synchronize, then CUDA events around one Python call (host time included); median of N;
  - graph: the call captured once in a torch.cuda.CUDAGraph after warm-up on a side stream; replays
    back to back, each between two CUDA events; median of N.
Ceilings are measured at start: read bandwidth (a grid-stride 16-byte __ldg kernel via CuPy, and torch's
bf16 sum, both over 4 GiB; the faster is the ceiling) and a bf16 8192^3 torch GEMM.

Peer: `flash_mla` (DeepSeek) or `sgl_kernel.flash_mla` (sglang-kernel wheel; <repo>/.peers is tried when
neither imports), classic API, same inputs, same two timings, plus max |ours - peer| of out and lse.

Writes <out>/bench_<gpu>_<date>.json (+ .png when matplotlib imports) and prints a table. A row that fails
(OOM, peer error, ...) records the error and the run goes on. torch is imported lazily: this module imports
on machines without it.

    python -m flashmla_rt bench [--quick] [--rows 0,3,5-7] [--iters 30] [--warmup 5] [--seed 0]
                                [--out DIR] [--no-peer] [--no-ours] [--list]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

D_QK, D_V, PAGE, H_KV = 576, 512, 64, 1
READ_BUFFER_BYTES = 4 << 30
GEMM_N = 8192
QUICK_ROWS = (0, 11, 25)   # memory-bound, compute-bound varlen, small-batch long-context

# docs/baseline-h200.md, H200, graph/eager in µs:
# (b, s_q, h_q, s_k, varlen, FlashMLA eager, FlashMLA graph, best peer graph, best peer)
BASELINE = (
    (128, 1, 16, 4096, False, 165, 147, 147, "FlashMLA"),
    (128, 1, 16, 4096, True, 159, 143, 143, "FlashMLA"),
    (128, 2, 16, 4096, False, 161, 147, 147, "FlashMLA"),
    (128, 2, 16, 4096, True, 192, 168, 168, "FlashMLA"),
    (128, 1, 64, 4096, False, 175, 149, 149, "FlashMLA"),
    (128, 1, 64, 4096, True, 198, 183, 183, "FlashMLA"),
    (128, 2, 64, 4096, False, 241, 226, 226, "FlashMLA"),
    (128, 2, 64, 4096, True, 265, 250, 250, "FlashMLA"),
    (128, 1, 128, 4096, False, 240, 225, 225, "FlashMLA"),
    (128, 1, 128, 4096, True, 268, 254, 254, "FA3-MLA"),
    (128, 2, 128, 4096, False, 453, 436, 436, "FlashMLA"),
    (128, 2, 128, 4096, True, 484, 468, 468, "FlashMLA"),
    (128, 1, 16, 8192, False, 297, 282, 282, "FlashMLA"),
    (128, 1, 16, 8192, True, 328, 310, 310, "FlashMLA"),
    (128, 2, 16, 8192, False, 297, 282, 282, "FlashMLA"),
    (128, 2, 16, 8192, True, 339, 322, 322, "FlashMLA"),
    (128, 1, 64, 8192, False, 301, 285, 285, "FlashMLA"),
    (128, 1, 64, 8192, True, 345, 331, 331, "FlashMLA"),
    (128, 2, 64, 8192, False, 474, 457, 457, "FlashMLA"),
    (128, 2, 64, 8192, True, 511, 502, 497, "FA3-MLA"),
    (128, 1, 128, 8192, False, 499, 472, 464, "FA3-MLA"),
    (128, 1, 128, 8192, True, 492, 462, 462, "FlashMLA"),
    (128, 2, 128, 8192, False, 857, 867, 867, "FlashMLA"),
    (128, 2, 128, 8192, True, 941, 918, 918, "FlashMLA"),
    (1, 1, 128, 65536, False, 102, 87, 61, "FlashInfer"),
    (4, 1, 16, 32768, False, 82, 66, 57, "FA3-MLA"),
)
BASELINE_CEILINGS = {"read_gbps": 4568.0, "copy_gbps": 4230.0, "gemm_tflops": 777.0}


def _torch():
    import torch
    return torch


# ----------------------------------------------------------------------------------------------- CLI

def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m flashmla_rt bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help=f"only rows {','.join(map(str, QUICK_ROWS))} (smoke test)")
    p.add_argument("--rows", default=None, help="row indices of the grid, e.g. 0,3,5-7 (see --list)")
    p.add_argument("--iters", type=int, default=30, help="timed runs per measurement (median), >= 30 advised")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs before each measurement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default: $OUT if set, else bench/results)")
    p.add_argument("--no-peer", action="store_true", help="do not look for FlashMLA")
    p.add_argument("--no-ours", action="store_true", help="time only the peer (e.g. to check the peer build)")
    p.add_argument("--list", action="store_true", help="print the grid with row indices and exit")
    return p.parse_args(argv)


def parse_rows(spec, n):
    """'0,3,5-7' -> [0, 3, 5, 6, 7]; raises ValueError naming the bad part."""
    rows = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(f"--rows: expected indices like 0,3,5-7, got {part!r}")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ValueError(f"--rows: range {part!r} runs backwards")
        if hi >= n:
            raise ValueError(f"--rows: {part!r} is outside 0..{n - 1}")
        rows.extend(range(lo, hi + 1))
    return sorted(set(rows))


def selected_rows(args):
    if args.rows:
        return parse_rows(args.rows, len(BASELINE))
    if args.quick:
        return list(QUICK_ROWS)
    return list(range(len(BASELINE)))


def row_label(b, s_q, h_q, s_k, varlen):
    return f"b{b} s_q{s_q} h_q{h_q} s_k{s_k}{' var' if varlen else ''}"


def default_out_dir():
    return os.environ.get("OUT") or "bench/results"


# ------------------------------------------------------------------------------------------ timing

def time_eager(fn, iters, warmup):
    """Median µs of one Python call each, measured from an idle GPU (so host time is included)."""
    torch = _torch()
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(iters):
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return statistics.median(times)


def capture_graph(fn, warmup):
    """Warm `fn` up on a side stream, then capture one call. Returns (graph, what the captured call returned)."""
    torch = _torch()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(max(warmup, 1)):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        result = fn()
    torch.cuda.synchronize()
    return graph, result


def time_back_to_back(fn, iters, warmup):
    """Median µs of fn() launched back to back, each between its own pair of events (GPU time only)."""
    torch = _torch()
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for s, e in zip(starts, ends):
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends))


def time_first_call(fn):
    """Wall ms of one synchronized call: the first of the row (kernels compiled or loaded lazily show up here;
    `import flashmla_rt` on a Hopper machine already loads them, so usually this is just a cold call)."""
    torch = _torch()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3


# ---------------------------------------------------------------------------------------- ceilings

_READ_KERNEL = r"""
extern "C" __global__ void read_bw(const uint4* __restrict__ p, unsigned long long n, unsigned int* sink) {
    unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    unsigned int acc = 0;
    for (; i + 3 * stride < n; i += 4 * stride) {          // 4 independent 16-byte loads in flight
        uint4 a = __ldg(p + i), b = __ldg(p + i + stride);
        uint4 c = __ldg(p + i + 2 * stride), d = __ldg(p + i + 3 * stride);
        acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^ d.w;
    }
    for (; i < n; i += stride) {
        uint4 a = __ldg(p + i);
        acc ^= a.x ^ a.y ^ a.z ^ a.w;
    }
    if (acc == 0x9e3779b9u) sink[0] = acc;                  // keeps the loads alive; practically never true
}
"""


class _TorchStreamPtr:
    """What CuPy's launcher needs from a stream: `.ptr` (torch's current stream)."""

    def __init__(self, torch):
        self.ptr = torch.cuda.current_stream().cuda_stream


def read_gbps_cupy(buf, sm_count, iters):
    """Grid-stride uint4 __ldg kernel (4 loads in flight per thread) over `buf`, compiled by CuPy/NVRTC."""
    import cupy
    torch = _torch()
    kernel = cupy.RawKernel(_READ_KERNEL, "read_bw")
    sink = torch.zeros(1, dtype=torch.int32, device="cuda")
    n16 = buf.numel() * buf.element_size() // 16
    grid, block = (sm_count * 8, 1, 1), (256, 1, 1)
    args = (cupy.uint64(buf.data_ptr()), cupy.uint64(n16), cupy.uint64(sink.data_ptr()))

    def run():
        kernel(grid, block, args, stream=_TorchStreamPtr(torch))

    us = time_back_to_back(run, iters, warmup=3)
    return n16 * 16 / (us * 1e-6) / 1e9


def read_gbps_torch(buf, iters):
    """torch.sum over the bf16 buffer (reads every byte once, fp32 accumulation)."""
    us = time_back_to_back(lambda: buf.sum(), iters, warmup=3)
    return buf.numel() * buf.element_size() / (us * 1e-6) / 1e9


def _read_methods(sm_count, iters):
    torch = _torch()
    buf = torch.ones(READ_BUFFER_BYTES // 2, dtype=torch.bfloat16, device="cuda")
    return {"cupy_ldg128_x4_4GiB": _try(lambda: round(read_gbps_cupy(buf, sm_count, iters), 1)),
            "torch_sum_bf16_4GiB": _try(lambda: round(read_gbps_torch(buf, iters), 1))}


def measure_read_ceiling(sm_count, iters):
    """{'read_gbps': the best method, 'read_methods': {method: GB/s or error}}; the 4 GiB buffer is freed."""
    methods = _read_methods(sm_count, iters)
    _release_memory()
    numbers = [v for v in methods.values() if isinstance(v, float)]
    return {"read_gbps": max(numbers) if numbers else None, "read_methods": methods}


def _gemm_us(iters):
    torch = _torch()
    a = torch.randn(GEMM_N, GEMM_N, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(GEMM_N, GEMM_N, dtype=torch.bfloat16, device="cuda")
    return time_back_to_back(lambda: a @ b, iters, warmup=3)


def measure_gemm_ceiling(iters):
    """bf16 GEMM TFLOPS of torch.matmul at 8192^3 on random data (the doc's compute ceiling)."""
    us = _gemm_us(iters)
    _release_memory()
    return round(2 * GEMM_N ** 3 / (us * 1e-6) / 1e12, 1)


# ------------------------------------------------------------------------------------------- inputs

def make_seqlens(b, s_q, s_k, varlen, seed):
    """FlashMLA's test lengths: s_k each, or max(N(s_k, s_k/2), s_q) as int."""
    if not varlen:
        return [s_k] * b
    rng = random.Random(seed)
    return [int(max(rng.normalvariate(s_k, s_k / 2), s_q)) for _ in range(b)]


def make_inputs(b, s_q, h_q, s_k, varlen, seed, page=PAGE, dtype="bfloat16"):
    """q, k_cache, block_table, cache_seqlens on the GPU (block table: a permutation of all blocks)."""
    torch = _torch()
    seqlens = make_seqlens(b, s_q, s_k, varlen, seed)
    max_blocks = -(-max(seqlens) // 256) * 256 // page   # FlashMLA pads max_seqlen to a multiple of 256
    torch.manual_seed(seed)
    cache_seqlens = torch.tensor(seqlens, dtype=torch.int32, device="cuda")
    dt = getattr(torch, dtype)
    q = torch.randn(b, s_q, h_q, D_QK, dtype=dt, device="cuda")
    k_cache = torch.randn(b * max_blocks, page, H_KV, D_QK, dtype=dt, device="cuda")
    block_table = torch.randperm(b * max_blocks, device="cuda").to(torch.int32).view(b, max_blocks)
    return q, k_cache, block_table, cache_seqlens


def work_of(b, s_q, h_q, seqlens_sum):
    """(FLOPs, bytes) by FlashMLA's formulas (causal masking ignored)."""
    flops = 2 * s_q * seqlens_sum * h_q * (D_QK + D_V)
    nbytes = 2 * (seqlens_sum * H_KV * D_QK + b * s_q * h_q * (D_QK + D_V))
    return flops, nbytes


# ------------------------------------------------------------------------------------- implementations

def load_ours():
    """(module, error string)."""
    try:
        import flashmla_rt
        flashmla_rt.get_mla_metadata, flashmla_rt.flash_mla_with_kvcache  # noqa: B018 - fail early if absent
        return flashmla_rt, None
    except Exception as exc:  # noqa: BLE001
        return None, f"{type(exc).__name__}: {exc}"


def _peers_dir():
    return Path(__file__).resolve().parent.parent / ".peers"


def load_peer():
    """(module with the classic API, its name, error string). Tries flash_mla, then sgl_kernel.flash_mla,
    then both again with <repo>/.peers on sys.path."""
    errors = []
    for attempt in range(2):
        if attempt == 1:
            if not _peers_dir().is_dir():
                break
            sys.path.insert(0, str(_peers_dir()))
        for name in ("flash_mla", "sgl_kernel.flash_mla"):
            try:
                import importlib
                mod = importlib.import_module(name)
                mod.get_mla_metadata, mod.flash_mla_with_kvcache  # noqa: B018
                return mod, name, None
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
    return None, None, "; ".join(errors)


def make_call(mod, q, k_cache, block_table, cache_seqlens, s_q, h_q, **extra):
    """Metadata once (untimed), then a zero-argument closure doing one decode call. `extra` kwargs go to the call.
    Ours gets check_seqlens=False unless `extra` says otherwise: the serving configuration, no host sync
    (FlashMLA has no such check)."""
    torch = _torch()
    if getattr(mod, "__name__", None) == __package__:
        extra.setdefault("check_seqlens", False)
    meta, num_splits = mod.get_mla_metadata(cache_seqlens, s_q * h_q // H_KV, H_KV)
    torch.cuda.synchronize()

    def call():
        return mod.flash_mla_with_kvcache(q, k_cache, block_table, cache_seqlens, D_V, meta, num_splits,
                                          causal=True, **extra)
    return call


def as_torch(x):
    """A torch tensor view of x (torch, DLPack or __cuda_array_interface__ objects)."""
    torch = _torch()
    if isinstance(x, torch.Tensor):
        return x
    if hasattr(x, "__dlpack__"):
        return torch.from_dlpack(x)
    return torch.as_tensor(x, device="cuda")


def max_abs_diff(a, b, finite_only=False):
    torch = _torch()
    a, b = as_torch(a).float(), as_torch(b).float()
    if a.shape != b.shape:
        return f"shape mismatch {tuple(a.shape)} vs {tuple(b.shape)}"
    if finite_only:
        both = torch.isfinite(a) & torch.isfinite(b)
        if not bool((torch.isfinite(a) == torch.isfinite(b)).all()):
            return "non-finite positions differ"
        a, b = a[both], b[both]
    return float((a - b).abs().max()) if a.numel() else 0.0


def metrics(us, flops, nbytes, ceilings):
    if us is None:
        return {}
    gbps = nbytes / (us * 1e-6) / 1e9
    tflops = flops / (us * 1e-6) / 1e12
    read, gemm = ceilings.get("read_gbps"), ceilings.get("gemm_tflops")
    return {"us": round(us, 2), "tflops": round(tflops, 1), "gbps": round(gbps, 1),
            "pct_read_ceiling": round(100 * gbps / read, 1) if read else None,
            "pct_gemm_ceiling": round(100 * tflops / gemm, 1) if isinstance(gemm, float) else None}


def bench_one(mod, inputs, s_q, h_q, args, work, ceilings, is_ours):
    """Metadata, then eager and graph timings of one implementation.
    Returns (record, (out, lse) of one eager call, or None when the eager call failed)."""
    torch = _torch()
    flops, nbytes = work
    rec, eager_result = {}, None
    try:
        call = make_call(mod, *inputs, s_q, h_q)
        if is_ours:
            rec["first_call_ms"] = round(time_first_call(call), 1)
        rec["eager"] = metrics(time_eager(call, args.iters, args.warmup), flops, nbytes, ceilings)
        eager_result = call()
        torch.cuda.synchronize()
    except Exception as exc:  # noqa: BLE001
        rec["error_eager"] = _short_error(exc)
        return rec, None
    graph = None
    try:
        graph, graph_result = capture_graph(call, args.warmup)
        us = time_back_to_back(graph.replay, args.iters, args.warmup)
        rec["graph"] = metrics(us, flops, nbytes, ceilings)
        rec["graph_vs_eager_max_abs_diff_out"] = max_abs_diff(graph_result[0], eager_result[0])
    except Exception as exc:  # noqa: BLE001
        rec["error_graph"] = _short_error(exc)
    finally:
        del graph
    return rec, eager_result


def agreement(ours_result, peer_result):
    """max |ours - peer| of out (all elements) and lse (finite elements; non-finite positions must match)."""
    return {"max_abs_diff_out": _try(lambda: max_abs_diff(ours_result[0], peer_result[0])),
            "max_abs_diff_lse": _try(lambda: max_abs_diff(ours_result[1], peer_result[1], finite_only=True))}


def _short_error(exc):
    tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return tb[:500]


# -------------------------------------------------------------------------------------------- rows

def bench_row(idx, ours, peer, args, ceilings):
    """One grid row: inputs, ours, peer, agreement; every failure is recorded, nothing is raised."""
    b, s_q, h_q, s_k, varlen, fm_eager, fm_graph, best_graph, best_name = BASELINE[idx]
    rec = {"row": idx, "label": row_label(b, s_q, h_q, s_k, varlen), "b": b, "s_q": s_q, "h_q": h_q,
           "h_kv": H_KV, "s_k": s_k, "varlen": varlen, "causal": True, "page": PAGE, "dtype": "bf16",
           "baseline": {"flashmla_eager_us": fm_eager, "flashmla_graph_us": fm_graph,
                        "best_peer_graph_us": best_graph, "best_peer": best_name}}
    inputs = None
    try:
        inputs = make_inputs(b, s_q, h_q, s_k, varlen, args.seed)
        seqlens_sum = int(inputs[3].sum())
        flops, nbytes = work_of(b, s_q, h_q, seqlens_sum)
        rec.update(sum_seqlens=seqlens_sum, max_seqlen=int(inputs[3].max()),
                   num_blocks=inputs[1].shape[0], flops=flops, bytes=nbytes)
        results = {}
        for name, mod in (("ours", ours), ("peer", peer)):
            if mod is not None:
                rec[name], results[name] = bench_one(mod, inputs, s_q, h_q, args, (flops, nbytes), ceilings,
                                                     is_ours=name == "ours")
        if results.get("ours") is not None and results.get("peer") is not None:
            rec["peer"].update(agreement(results["ours"], results["peer"]))
        results.clear()
        ours_graph = rec.get("ours", {}).get("graph", {}).get("us")
        peer_graph = rec.get("peer", {}).get("graph", {}).get("us")
        if ours_graph:
            rec["ours_graph_over_best_peer"] = round(ours_graph / best_graph, 3)
            if peer_graph:            # the same-run ratio: the one that holds on any GPU
                rec["ours_graph_over_peer"] = round(ours_graph / peer_graph, 3)
    except Exception as exc:  # noqa: BLE001 - e.g. OOM while building inputs
        rec["error"] = _short_error(exc)
    finally:
        del inputs
        _release_memory()
    return rec


def _release_memory():
    torch = _torch()
    try:
        torch.cuda.synchronize()
    except Exception:  # noqa: BLE001 - a sticky CUDA error is already recorded in the row
        pass
    torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------- environment

def _driver_version():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "-i", "0"],
                             capture_output=True, text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except Exception:  # noqa: BLE001
        pass
    return None


def _git_head():
    """Commit of the checkout the package runs from (which kernel version a result belongs to), or None.
    "+dirty" when tracked files differ from it: then the commit alone does not name the code that ran."""
    try:
        root = Path(__file__).resolve().parent.parent
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5).stdout.strip()
        if not head:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "diff", "--quiet", "HEAD", "--", "flashmla_rt", "kernels_cu"],
                               capture_output=True, timeout=10).returncode == 1
        return head + ("+dirty" if dirty else "")
    except Exception:  # noqa: BLE001
        return None


def _version_of(module_name):
    try:
        import importlib
        return getattr(importlib.import_module(module_name), "__version__", "unknown")
    except Exception:  # noqa: BLE001
        return None


def environment():
    torch = _torch()
    props = torch.cuda.get_device_properties(0)
    env = {"gpu": props.name, "sm_count": props.multi_processor_count,
           "compute_capability": f"{props.major}.{props.minor}",
           "gpu_memory_gib": round(props.total_memory / 2**30, 1), "driver": _driver_version(),
           "torch": torch.__version__, "torch_cuda": torch.version.cuda, "cupy": _version_of("cupy"),
           "numpy": _version_of("numpy"), "flashmla_rt": _version_of("flashmla_rt"),
           "python": platform.python_version(), "host": platform.node()}
    env["flashmla_rt_git"] = _git_head()
    try:
        import cupy
        env["cuda_driver_api"] = cupy.cuda.runtime.driverGetVersion()
    except Exception:  # noqa: BLE001
        pass
    return env


# ------------------------------------------------------------------------------------------ output

def _fmt(x, width, digits=0):
    if x is None or isinstance(x, str):
        return "-".rjust(width)
    return f"{x:{width}.{digits}f}"


def format_table(records):
    """A compact text table: graph/eager µs, GB/s and % of the read ceiling, TFLOPS, peer (ours/peer: graph time over
    the peer's in this run), the H200 baseline's best peer (ours/best: over that number)."""
    head = (f"{'row':>3} {'case':<28} {'ours eag':>8} {'ours gr':>8} {'GB/s':>6} {'%rd':>5} {'TFLOPS':>6}"
            f" {'peer eag':>8} {'peer gr':>8} {'ours/peer':>9} {'base best':>9} {'ours/best':>9} {'|d out|':>8}")
    lines = [head, "-" * len(head)]
    for r in records:
        o, p = r.get("ours", {}), r.get("peer", {})
        og, oe, pg, pe = o.get("graph", {}), o.get("eager", {}), p.get("graph", {}), p.get("eager", {})
        diff = p.get("max_abs_diff_out")
        lines.append(
            f"{r['row']:>3} {r['label']:<28} {_fmt(oe.get('us'), 8, 1)} {_fmt(og.get('us'), 8, 1)}"
            f" {_fmt(og.get('gbps'), 6)} {_fmt(og.get('pct_read_ceiling'), 5, 1)} {_fmt(og.get('tflops'), 6)}"
            f" {_fmt(pe.get('us'), 8, 1)} {_fmt(pg.get('us'), 8, 1)} {_fmt(r.get('ours_graph_over_peer'), 9, 3)}"
            f" {r['baseline']['best_peer_graph_us']:>9}"
            f" {_fmt(r.get('ours_graph_over_best_peer'), 9, 3)} {_fmt(diff, 8, 4)}")
        errors = [f"{k}: {v}" for k, v in _errors_of(r)]
        lines.extend(f"      ! {e}" for e in errors)
    return "\n".join(lines)


def _errors_of(rec):
    if "error" in rec:
        yield "row", rec["error"]
    for name in ("ours", "peer"):
        for key, val in rec.get(name, {}).items():
            if key.startswith("error"):
                yield f"{name} {key[6:] or 'error'}", val


def write_plot(records, path):
    """Grouped bars per row: ours graph, peer graph, baseline best peer (µs). Returns a note or None."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # noqa: BLE001
        return f"matplotlib not importable ({type(exc).__name__}); JSON only, no plot"
    series = (("ours (graph)", lambda r: r.get("ours", {}).get("graph", {}).get("us")),
              ("peer (graph)", lambda r: r.get("peer", {}).get("graph", {}).get("us")),
              ("baseline best peer (graph)", lambda r: r["baseline"]["best_peer_graph_us"]))
    width = 0.27
    fig, ax = plt.subplots(figsize=(max(8, 0.55 * len(records) + 2), 5))
    xs = range(len(records))
    for k, (name, get) in enumerate(series):
        vals = [get(r) or 0 for r in records]
        ax.bar([x + (k - 1) * width for x in xs], vals, width, label=name)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r["label"] for r in records], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("µs per call (lower is better)")
    ax.set_title("MLA decode, h_kv=1, causal, page 64, bf16")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def output_paths(out_dir, gpu_name):
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H%M%S")
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-") or "gpu"
    base = Path(out_dir) / f"bench_{gpu}_{stamp}"
    return base.with_suffix(".json"), base.with_suffix(".png")


def write_report(report, json_path, png_path):
    json_path.parent.mkdir(parents=True, exist_ok=True)
    note = write_plot(report["rows"], png_path) if report["rows"] else "no rows"
    report["plot"] = str(png_path) if note is None else note
    json_path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    return note


# -------------------------------------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        rows = selected_rows(args)
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for i, row in enumerate(BASELINE):
            print(f"{i:>3} {row_label(*row[:5]):<28} baseline best peer (graph) {row[7]} µs ({row[8]})")
        return 0
    torch = _torch()
    if not torch.cuda.is_available():
        print("bench: no CUDA device visible to torch", file=sys.stderr)
        return 2

    env = environment()
    ours, ours_err = (None, "disabled by --no-ours") if args.no_ours else load_ours()
    peer, peer_name, peer_err = (None, None, "disabled by --no-peer") if args.no_peer else load_peer()
    print(f"bench: {env['gpu']} ({env['sm_count']} SMs), torch {env['torch']}, cupy {env['cupy']}; "
          f"ours: {'ok' if ours else ours_err}; peer: {peer_name or peer_err}", flush=True)

    ceilings = measure_read_ceiling(env["sm_count"], args.iters)
    ceilings["gemm_tflops"] = _try(lambda: measure_gemm_ceiling(args.iters))
    print(f"bench: ceilings {ceilings}", flush=True)
    if "H200" not in env["gpu"]:
        print(f"bench: 'base best' and 'ours/best' are H200 numbers (docs/baseline-h200.md); on this GPU compare "
              f"'ours/peer', the peer run here", flush=True)

    report = {"environment": env, "ceilings": ceilings, "baseline_ceilings_h200": BASELINE_CEILINGS,
              "method": {"iters": args.iters, "warmup": args.warmup, "seed": args.seed, "statistic": "median",
                         "eager": "synchronize, events around one Python call (host time included)",
                         "graph": "one call captured in torch.cuda.CUDAGraph after side-stream warm-up; "
                                  "back-to-back replays, events around each",
                         "formulas": "FLOPs=2*s_q*sum(seqlens)*h_q*(576+512); "
                                     "bytes=2*(sum(seqlens)*h_kv*576+b*s_q*h_q*(576+512))"},
              "ours": {"module": getattr(ours, "__file__", None), "error": ours_err},
              "peer": {"module": peer_name, "file": getattr(peer, "__file__", None), "error": peer_err},
              "rows": []}
    json_path, png_path = output_paths(args.out or default_out_dir(), env["gpu"])
    try:
        for idx in rows:
            rec = bench_row(idx, ours, peer, args, ceilings)
            report["rows"].append(rec)
            print("\n".join(format_table([rec]).splitlines()[2:]), flush=True)
    finally:
        note = write_report(report, json_path, png_path)
    print()
    print(format_table(report["rows"]))
    print(f"\nbench: wrote {json_path}" + (f" and {png_path}" if note is None else f"; {note}"))
    return 0


def _try(fn):
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001
        return f"error: {_short_error(exc)}"


if __name__ == "__main__":
    sys.exit(main())
