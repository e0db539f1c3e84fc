"""Every CTA's timeline in the decode kernel a bench row really runs (seesaw or narrow) and in its combine, from a
trace build's fmla_trace_cta marks (common/trace_cta.cuh): when decode CTAs finish their blocks and end, against the
work their schedule row gave them (a fit of blocks-done time on blocks and chunks: is the tail schedule-made, or
service-made, equal work served slower? on which SMs?), and when the combine's CTAs start, stop waiting and end
after the decode.
Usage (device): python3 bench/trace_ctas.py ROW [ROW ...]   (bench rows; env TRACE_WARMUP, default 20 calls)"""
import os
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))
os.environ["FLASHMLA_RT_NVRTC_OPTIONS"] = "-DFMLA_TRACE=1 " + os.environ.get("FLASHMLA_RT_NVRTC_OPTIONS", "")
import numpy as np  # noqa: E402
import torch  # noqa: E402

from flashmla_rt import _device, bench, kernels, schedule  # noqa: E402
from trace_arrays import CTA_MARKS_SHAPE, trace_array  # noqa: E402


def cta_marks(source: str):
    """fmla_trace_cta of the loaded module `source` [4096, 4] (start, end, blocks done / wait over in ns; SM id)."""
    return trace_array(source, "fmla_trace_cta", CTA_MARKS_SHAPE)


def report(row: int) -> None:
    b, s_q, h_q, s_k, varlen = bench.BASELINE[row][:5]
    q, k, bt, sl = bench.make_inputs(b, s_q, h_q, s_k, varlen, 0)
    call = bench.make_call(bench.load_ours()[0], q, k, bt, sl, s_q, h_q)
    for _ in range(int(os.environ.get("TRACE_WARMUP", "20"))):     # a sustained clock, not a cold one
        call()
    torch.cuda.synchronize()
    rows = s_q * h_q // bench.H_KV
    variant = kernels.decode_variant(rows)
    marks, combine_marks = cta_marks(variant.source), cta_marks(kernels.COMBINE_SOURCE)
    marks.fill(0)
    combine_marks.fill(0)
    torch.cuda.synchronize()
    call()
    torch.cuda.synchronize()
    seqlens = sl.cpu().numpy()
    meta, _ = schedule.plan(seqlens, schedule.num_sm_parts(_device.sm_count(0), rows, bench.H_KV))   # the twin
    print(f"row {row} {bench.row_label(b, s_q, h_q, s_k, varlen)}: {variant.name}")
    m = marks.get().astype(np.int64)
    t0 = analyse(m, meta, seqlens, -(-rows // schedule.BLOCK_M) * bench.H_KV)
    wide, grid = kernels.combine_launch(b, bench.H_KV, rows)
    analyse_combine(combine_marks.get().astype(np.int64), int(np.prod(grid)), "wide" if wide else "many rows",
                    t0, m[m[:, 1] > 0, 1].max())


def analyse(m: np.ndarray, meta: np.ndarray, seqlens, ctas_per_part: int) -> None:
    """Print the timeline of marks m [4096, 4] (ns, SM id) of CTAs with linear id m_block + ctas_per_part * part."""
    work = np.zeros(meta.shape[0])                   # blocks and chunks of each part
    chunks = np.zeros(meta.shape[0])
    for part, _, first, last, _ in schedule.chunks(meta, seqlens):
        work[part] += last - first
        chunks[part] += 1
    live = np.arange(min(ctas_per_part * meta.shape[0], 4096))
    live = live[(m[live, 0] > 0) & (m[live, 1] > 0) & (m[live, 2] > 0)]
    live = live[work[live // ctas_per_part] > 0]       # CTAs whose chunks have blocks (not only empty requests)
    t0 = m[live, 0].min()
    start, end, done = (m[live, 0] - t0) / 1e3, (m[live, 1] - t0) / 1e3, (m[live, 2] - t0) / 1e3
    part = live // ctas_per_part
    blocks = work[part]
    print(f"  {len(live)} CTAs with blocks ({int((work > 0).sum())} of {len(work)} parts); span {end.max():.1f} us; starts spread {start.max():.1f} us")
    for name, x in (("blocks done", done), ("end", end), ("epilogue", end - done)):
        print(f"  {name:11s} us: min {x.min():7.1f} p10 {np.percentile(x, 10):7.1f} p50 {np.median(x):7.1f} "
              f"p90 {np.percentile(x, 90):7.1f} max {x.max():7.1f}")
    rate = blocks / np.maximum(done - start, 1e-3)    # blocks per us, per CTA
    print(f"  blocks per CTA: min {blocks.min():.0f} p50 {np.median(blocks):.0f} max {blocks.max():.0f}; "
          f"blocks per us p10 {np.percentile(rate, 10):.3f} p50 {np.median(rate):.3f} p90 {np.percentile(rate, 90):.3f}")
    late = np.argsort(end)[-8:]
    print("  the 8 last to end (cta, part, SM, blocks, chunks, blocks done us, end us):",
          [(int(live[i]), int(part[i]), int(m[live[i], 3]), int(blocks[i]), int(chunks[part[i]]),
            round(float(done[i]), 1), round(float(end[i]), 1)) for i in late])
    # done ~ a + b * blocks + c * chunks over the CTAs: what the plan explains; the residual is how unevenly the
    # CTAs were served for the same work.
    x = np.stack([np.ones_like(blocks), blocks, chunks[part]], axis=1)
    coef, *_ = np.linalg.lstsq(x, done, rcond=None)
    fit = x @ coef
    res = done - fit
    print(f"  blocks done ~ {coef[0]:.1f} + {coef[1]:.3f} us a block + {coef[2]:.2f} us a chunk: the plan alone "
          f"would end the last CTA's blocks at {fit.max():.1f} us (measured {done.max():.1f}); residual us p10 "
          f"{np.percentile(res, 10):.2f} p90 {np.percentile(res, 90):.2f} max {res.max():.2f}")
    # Which SMs were served faster or slower than the fit: compare with bench/sm_rate_probe.py's fast SMs.
    order = np.argsort(res)
    sm = m[live, 3]
    print("  SMs served fastest (SM: residual us):", " ".join(f"{int(sm[i])}:{res[i]:.1f}" for i in order[:16]))
    print("  SMs served slowest (SM: residual us):", " ".join(f"{int(sm[i])}:{res[i]:.1f}" for i in order[-16:]))
    return t0


def analyse_combine(m: np.ndarray, n_ctas: int, kind: str, t0: int, decode_end: int) -> None:
    """The combine's CTAs (marks m: start, end, wait over; ns) against the decode's last CTA end, in us."""
    if n_ctas > 4096:
        print(f"  combine: {n_ctas} CTAs, more than the 4,096 the trace holds")
        return
    m = m[:n_ctas]
    ran = m[:, 0] > 0
    waited = ran & (m[:, 2] > 0)
    if not waited.any():
        print(f"  combine ({kind}): {int(ran.sum())} of {n_ctas} CTAs marked, none waited (no split request)")
        return
    rel = lambda x: (x - decode_end) / 1e3          # noqa: E731 - us after the decode's last CTA ended
    start, release, end = rel(m[waited, 0]), rel(m[waited, 2]), rel(m[waited, 1])
    print(f"  combine ({kind}): {int(ran.sum())} of {n_ctas} CTAs marked, {int(waited.sum())} waited for the decode; "
          f"us after the decode's last CTA ended (it ended {(decode_end - t0) / 1e3:.1f} us after the first start):")
    for name, x in (("start", start), ("wait over", release), ("end", end), ("merge", end - release)):
        print(f"    {name:9s} min {x.min():7.2f} p10 {np.percentile(x, 10):7.2f} p50 {np.median(x):7.2f} "
              f"p90 {np.percentile(x, 90):7.2f} max {x.max():7.2f}")
    print(f"    started after the decode ended (later waves): {int((start > 0).sum())}; the combine's last end: "
          f"{rel(m[ran, 1]).max():.2f} us after the decode's")


if __name__ == "__main__":
    for r in (int(a) for a in sys.argv[1:] or ["25"]):
        report(r)
