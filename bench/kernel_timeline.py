"""Where a graph replay's time goes, ours beside FlashMLA: each kernel's duration and the gaps between kernels,
from CUPTI's kernel records (torch.profiler), per bench row (H200).

Each implementation's call is captured in a CUDA graph (as `python -m flashmla_rt bench` does) and replayed
back to back under the profiler. Per replay: kernel k's duration, the gap from kernel k-1's end to kernel k's
start, and the period (one replay's first kernel start to the next one's). Medians over the replays.
Usage (device, carry .peers): python3 bench/kernel_timeline.py [rows, default 4,16,22,24,25] [--replays N]
"""
import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))   # the package of this checkout, unless PYTHONPATH has one

import torch  # noqa: E402

from flashmla_rt import bench  # noqa: E402


def kernel_records(trace_path):
    """(start µs, duration µs, name) of every GPU kernel in a chrome trace, in start order."""
    events = json.loads(Path(trace_path).read_text())["traceEvents"]
    ks = [(e["ts"], e["dur"], e["name"]) for e in events if e.get("cat") == "kernel"]
    return sorted(ks)


def timeline(graph, replays):
    """Median duration per kernel slot, median gap before each slot, median period, kernels per replay."""
    for _ in range(10):
        graph.replay()
    torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "trace.json"
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(replays):
                graph.replay()
            torch.cuda.synchronize()
        prof.export_chrome_trace(str(path))
        ks = kernel_records(path)
    n = len(ks) // replays
    if n == 0 or len(ks) != n * replays:
        return {"error": f"{len(ks)} kernel records for {replays} replays"}
    slots = []
    for k in range(n):
        recs = ks[k::n]
        gaps = [ks[i][0] - (ks[i - 1][0] + ks[i - 1][1]) for i in range(k, len(ks), n) if i > 0]
        slots.append({"name": recs[0][2][:60], "dur_us": round(statistics.median(r[1] for r in recs), 2),
                      "gap_before_us": round(statistics.median(gaps), 2) if gaps else None})
    period = statistics.median(ks[i + n][0] - ks[i][0] for i in range(0, len(ks) - n, n))
    return {"kernels": slots, "period_us": round(period, 2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rows", nargs="?", default="4,16,22,24,25")
    ap.add_argument("--replays", type=int, default=40)
    args = ap.parse_args()
    ours, ours_err = bench.load_ours()
    peer, peer_name, peer_err = bench.load_peer()
    out = []
    for r in (int(x) for x in args.rows.split(",")):
        b, s_q, h_q, s_k, varlen = bench.BASELINE[r][:5]
        inputs = bench.make_inputs(b, s_q, h_q, s_k, varlen, seed=0)
        rec = {"row": r, "label": bench.row_label(b, s_q, h_q, s_k, varlen)}
        for name, mod in (("ours", ours), ("peer", peer)):
            if mod is None:
                rec[name] = {"error": ours_err if name == "ours" else peer_err}
                continue
            call = bench.make_call(mod, *inputs, s_q, h_q)
            graph, _ = bench.capture_graph(call, 3)
            rec[name] = timeline(graph, args.replays)
            rec[name]["graph_us"] = round(bench.time_back_to_back(graph.replay, 50, 10), 2)
            del graph
        out.append(rec)
        for name in ("ours", "peer"):
            t = rec[name]
            if "kernels" in t:
                parts = "  ".join(f"[gap {k['gap_before_us']}] {k['name'][:28]} {k['dur_us']}" for k in t["kernels"])
                print(f"row {r:2d} {rec['label']:30s} {name:4s} graph {t['graph_us']:8.2f}  period "
                      f"{t['period_us']:8.2f}  {parts}", flush=True)
            else:
                print(f"row {r:2d} {name}: {t.get('error')}", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
