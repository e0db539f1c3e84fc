"""Graph-replay time of our kernel for fp16 vs bf16 and page sizes 16..256 on two bench rows (issue 3's
"fp16 within 2 %" and "pages within 10 % of page 64"). Usage (device): python bench/dtype_page.py"""

import flashmla_rt
from flashmla_rt import bench


def graph_us(mod, b, s_q, h_q, s_k, dtype="bfloat16", page=64):
    """Median µs of one decode call of `mod` (ours or a peer) replayed from a CUDA graph, on fresh inputs."""
    q, k, bt, sl = bench.make_inputs(b, s_q, h_q, s_k, False, 0, page=page, dtype=dtype)
    call = bench.make_call(mod, q, k, bt, sl, s_q, h_q)
    graph, _ = bench.capture_graph(call, 3)
    return bench.time_back_to_back(graph.replay, 20, 3)


def main():
    for b, s_q, h_q, s_k in ((128, 1, 16, 8192), (128, 1, 64, 8192), (128, 2, 128, 8192)):
        for dtype, page in (("bfloat16", 64), ("float16", 64), ("bfloat16", 16), ("bfloat16", 32),
                            ("bfloat16", 128), ("bfloat16", 256)):
            us = graph_us(flashmla_rt, b, s_q, h_q, s_k, dtype, page)
            print(f"b{b} s_q{s_q} h_q{h_q} s_k{s_k} {dtype:9s} page {page:3d}: {us:8.1f} us", flush=True)


if __name__ == "__main__":
    main()
