"""The seesaw's KV maps at 256-B against 128-B L2 promotion, ours on one bench row, with FlashMLA as a third phase:
each captured call replays back to back for a few seconds, interleaved A B C A B C, while nvidia-smi samples power
and SM clock (power_ab's phases). Under the board's power cap, energy per call is time per call: this asks whether
the L2 traffic that 256-B promotion adds around the region boxes (calls 76-77) costs time there. Both promotions
must give bit-identical outputs (checked first).
Usage (device, carry .peers): python3 bench/promo_ab.py ROW [ROW ...] [--seconds S] [--rounds N]"""
import argparse
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from flashmla_rt import _fastpath, bench, kernels  # noqa: E402
from flashmla_rt.jit import tma  # noqa: E402
from power_ab import graph_of, print_phases, sample_phases  # noqa: E402  (bench/ is on sys.path)

PROMOTIONS = (("256B", tma.L2_PROMOTION_256B), ("128B", tma.L2_PROMOTION_128B))


def ours_with_promotion(inputs, s_q: int, h_q: int, promotion: int):
    """Our call captured with the seesaw's region maps at `promotion`. Launch plans are cached per call signature,
    so the cache is emptied first: this capture then builds its own plan, and maps, from the patched variant."""
    rows = s_q * h_q // bench.H_KV
    variant = kernels.decode_variant(rows)
    if variant.source != kernels.DECODE_SOURCE:
        raise SystemExit(f"{rows} rows per KV head run the narrow kernel, which has no region maps")
    patched = variant._replace(kv_maps=lambda ptr, shape, strides: kernels.kv_region_maps(ptr, shape, strides,
                                                                                          promotion))
    chosen = kernels.decode_variant
    _fastpath._plans.clear()
    kernels.decode_variant = lambda _rows: patched
    try:
        return graph_of(bench.make_call(bench.load_ours()[0], *inputs, s_q, h_q))
    finally:
        kernels.decode_variant = chosen
        _fastpath._plans.clear()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rows", type=int, nargs="*", default=[16, 4, 20, 22])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    peer = bench.load_peer()[0]
    for row in a.rows:
        b, s_q, h_q, s_k, varlen = bench.BASELINE[row][:5]
        inputs = bench.make_inputs(b, s_q, h_q, s_k, varlen, 0)
        graphs = [(f"ours {name}", ours_with_promotion(inputs, s_q, h_q, promo)) for name, promo in PROMOTIONS]
        if peer:
            graphs.append(("FlashMLA", graph_of(bench.make_call(peer, *inputs, s_q, h_q))))
        outs = []
        for _, (g, _, (out, _)) in graphs[:2]:
            g.replay()
            outs.append(out.clone())
        torch.cuda.synchronize()
        if not torch.equal(outs[0], outs[1]):
            raise SystemExit(f"row {row}: the two promotions' outputs differ")
        print(f"row {row} {bench.row_label(b, s_q, h_q, s_k, varlen)}: outputs bit-identical", flush=True)
        print_phases(sample_phases(graphs, a.seconds, a.rounds))
        del graphs
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
