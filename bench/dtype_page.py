"""Graph-replay time of our kernel for fp16 vs bf16 and page sizes 16..256 on two bench rows (issue 3's
"fp16 within 2 %" and "pages within 10 % of page 64"). Usage (device): python bench/dtype_page.py"""
import torch

import flashmla_rt
from flashmla_rt import bench


def inputs(b, s_q, h_q, s_k, page, dtype):
    torch.manual_seed(0)
    n = b * s_k // page
    q = torch.randn(b, s_q, h_q, 576, dtype=dtype, device="cuda")
    k = torch.randn(n, page, 1, 576, dtype=dtype, device="cuda")
    bt = torch.randperm(n, device="cuda").to(torch.int32).view(b, -1)
    return q, k, bt, torch.full((b,), s_k, dtype=torch.int32, device="cuda")


for b, s_q, h_q, s_k in ((128, 1, 16, 8192), (128, 2, 128, 8192)):
    for dtype, page in ((torch.bfloat16, 64), (torch.float16, 64), (torch.bfloat16, 16), (torch.bfloat16, 32),
                        (torch.bfloat16, 128), (torch.bfloat16, 256)):
        q, k, bt, sl = inputs(b, s_q, h_q, s_k, page, dtype)
        call = bench.make_call(flashmla_rt, q, k, bt, sl, s_q, h_q, check_seqlens=False)
        graph, _ = bench.capture_graph(call, 3)
        us = bench.time_back_to_back(graph.replay, 20, 3)
        print(f"b{b} s_q{s_q} h_q{h_q} s_k{s_k} {str(dtype)[6:]:9s} page {page:3d}: {us:8.1f} us", flush=True)
        del q, k, bt, sl, graph
