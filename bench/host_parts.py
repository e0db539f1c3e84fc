"""Per-piece host cost of the fast path's building blocks on the GPU machine (torch CUDA tensors), median µs of
many calls each: what an eager flash_mla_with_kvcache call spends outside the kernels. Usage:
python3 bench/host_parts.py"""
import statistics
import time

import torch


def per_call_us(fn, n=20000, rounds=5):
    meds = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        meds.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(meds)


def main():
    dev = torch.device("cuda", 0)
    q = torch.randn(128, 1, 16, 576, device=dev, dtype=torch.bfloat16)
    tensors = [q] * 6
    cases = {
        "t.device": lambda: q.device,
        "t.get_device()": lambda: q.get_device(),
        "t.is_cuda": lambda: q.is_cuda,
        "t.shape": lambda: q.shape,
        "t.stride()": lambda: q.stride(),
        "t.dtype": lambda: q.dtype,
        "t.data_ptr()": lambda: q.data_ptr(),
        "6x (shape, stride, dtype, device)": lambda: tuple((t.shape, t.stride(), t.dtype, t.device) for t in tensors),
        "6x (shape, stride, dtype, get_device)": lambda: tuple((t.shape, t.stride(), t.dtype, t.get_device())
                                                               for t in tensors),
        "hash of the 6x device tuple": lambda: hash(tuple((t.shape, t.stride(), t.dtype, t.device) for t in tensors)),
        "torch.cuda.current_stream(0).cuda_stream": lambda: torch.cuda.current_stream(0).cuda_stream,
        "torch._C._cuda_getCurrentRawStream(0)": lambda: torch._C._cuda_getCurrentRawStream(0),
        "torch.empty(out shape, bf16, device)": lambda: torch.empty((128, 1, 16, 512), dtype=torch.bfloat16, device=dev),
        "q.new_empty(out shape)": lambda: q.new_empty((128, 1, 16, 512)),
        "torch.empty(ws elems, fp32, device)": lambda: torch.empty(4_000_000, dtype=torch.float32, device=dev),
        "q.new_empty(ws elems, dtype=fp32)": lambda: q.new_empty(4_000_000, dtype=torch.float32),
    }
    for name, fn in cases.items():
        print(f"{per_call_us(fn):8.3f} us  {name}")
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
