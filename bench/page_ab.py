"""Page sizes against page 64, interleaved (64, 16, 32, 128, 256, 64, ...) so that clock and temperature drift falls
on all of them: issue 3's "pages 16-256 within 10 % of page 64" on the rows where a page size costs most.
Usage (device): python bench/page_ab.py [B,S_Q,H_Q,S_K ...]   (default: 128,2,128,8192)"""
import statistics
import sys

import flashmla_rt

from dtype_page import graph_us   # bench/ is the script's directory, so on sys.path

ROUNDS = 3
PAGES = (64, 16, 32, 128, 256)


def main(rows):
    for b, s_q, h_q, s_k in rows:
        times = {page: [] for page in PAGES}
        for _ in range(ROUNDS):
            for page in PAGES:
                times[page].append(graph_us(flashmla_rt, b, s_q, h_q, s_k, page=page))
        ref = statistics.median(times[64])
        cells = "  ".join(f"page {pg} {statistics.median(t):7.1f} us ({statistics.median(t) / ref - 1:+.1%})"
                          for pg, t in times.items())
        print(f"b{b} s_q{s_q} h_q{h_q} s_k{s_k}: {cells}  (all: {({p: [round(x, 1) for x in t] for p, t in times.items()})})",
              flush=True)


if __name__ == "__main__":
    main([tuple(int(x) for x in a.split(",")) for a in sys.argv[1:]] or [(128, 2, 128, 8192)])
