"""Sustained power and SM clock, ours against FlashMLA, on one bench row: each implementation's call runs back to
back for a few seconds (CUDA-graph replays, as the bench's graph timing), interleaved A B A B, while nvidia-smi
samples power.draw and clocks.sm every 50 ms. Per phase: median µs per call, W, MHz, and µJ per call.
Usage (device, carry .peers): python3 bench/power_ab.py [row, default 22] [--seconds S] [--rounds N]"""
import argparse
import datetime
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from flashmla_rt import bench  # noqa: E402


def graph_of(call):
    """(graph, the call, its captured results): all three must stay alive while the graph replays (the call's
    closure holds the metadata tensors the captured kernels read)."""
    g, result = bench.capture_graph(call, 3)
    return g, call, result


def run_phase(graph, seconds):
    """Replay until `seconds` have passed; returns (t0, t1, median µs per replay over 20-replay windows)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    per = []
    t0 = time.time()
    while time.time() - t0 < seconds:
        start.record()
        for _ in range(20):
            graph.replay()
        end.record()
        end.synchronize()
        per.append(start.elapsed_time(end) * 1e3 / 20)
    return t0, time.time(), statistics.median(per[2:] or per)


def sample_phases(graphs, seconds: float, rounds: int):
    """Replay each (name, (graph, call, result)) for `seconds`, A B A B for `rounds`, while nvidia-smi samples
    power, SM clock and temperature every 50 ms; returns [(name, µs/call, W, MHz, °C or None when unsampled)]."""
    log = tempfile.NamedTemporaryFile("w+", suffix=".csv", delete=False)
    smi = subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,power.draw,clocks.sm,temperature.gpu",
                            "--format=csv,noheader,nounits", "-lms", "50"], stdout=log)
    time.sleep(1.0)
    phases = []
    for _ in range(rounds):
        for name, (g, _, _) in graphs:
            phases.append((name, *run_phase(g, seconds)))
            time.sleep(0.5)
    smi.terminate()
    smi.wait()
    samples = []
    for line in Path(log.name).read_text().splitlines():
        parts = [x.strip() for x in line.split(",")]
        try:
            ts = datetime.datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
            samples.append((ts, float(parts[1]), float(parts[2]), float(parts[3])))
        except (ValueError, IndexError):
            continue
    out = []
    for name, t0, t1, us in phases:
        inside = [s for s in samples if t0 + 0.5 <= s[0] <= t1]      # skip the first 0.5 s of each phase
        if not inside:
            out.append((name, us, None, None, None))
            continue
        out.append((name, us, statistics.median(s[1] for s in inside), statistics.median(s[2] for s in inside),
                    statistics.median(s[3] for s in inside)))
    return out


def print_phases(phases) -> None:
    print("phase        us/call    W(med)  MHz(med)  degC   uJ/call  cycles/call(M)")
    for name, us, w, mhz, deg in phases:
        if w is None:
            print(f"{name:12s} {us:8.1f}   (no nvidia-smi samples inside the phase)")
            continue
        print(f"{name:12s} {us:8.1f}  {w:7.1f}  {mhz:8.0f}  {deg:5.0f}  {w * us:8.0f}  {us * mhz / 1e6:8.3f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("row", type=int, nargs="?", default=22)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    b, s_q, h_q, s_k, varlen = bench.BASELINE[a.row][:5]
    inputs = bench.make_inputs(b, s_q, h_q, s_k, varlen, 0)
    impls = [("ours", bench.load_ours()[0])]
    peer = bench.load_peer()[0]
    if peer:
        impls.append(("FlashMLA", peer))
    graphs = [(name, graph_of(bench.make_call(mod, *inputs, s_q, h_q))) for name, mod in impls]
    outs = []
    for _, (g, _, (out, _)) in graphs:               # one replay each, ours against the peer
        g.replay()
        outs.append(out)
    torch.cuda.synchronize()
    if len(outs) == 2:
        diff = (outs[0].float() - outs[1].float()).abs().max().item()
        print(f"max |out ours - out FlashMLA| over one replay each: {diff:.4g}")
    phases = sample_phases(graphs, a.seconds, a.rounds)
    print(f"row {a.row} {bench.row_label(b, s_q, h_q, s_k, varlen)}")
    print_phases(phases)


if __name__ == "__main__":
    main()
