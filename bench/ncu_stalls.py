"""Summarise ncu's per-instruction warp-stall samples (the `--page source --print-source sass --csv` output of
bench/ncu_run.sh): for each kernel in the file, samples by stall reason, by opcode, and the top instructions.
Usage: python3 bench/ncu_stalls.py ncu_<case>_sass.csv[.gz] [TOP]"""
import csv
import gzip
import re
import sys
from collections import Counter


def kernels(path):
    """Yield (kernel name, rows as dicts) for each kernel block of the csv."""
    name, header, rows = None, None, []
    with (gzip.open(path, "rt", newline="") if path.endswith(".gz") else open(path, newline="")) as f:
        for rec in csv.reader(f):
            if rec and rec[0] == "Kernel Name":
                if name is not None:
                    yield name, rows
                name, header, rows = rec[1], None, []
            elif header is None:
                header = rec
            elif rec:
                rows.append(dict(zip(header, rec)))
    if name is not None:
        yield name, rows


def num(x):
    try:
        return float(x.replace(",", ""))
    except (ValueError, AttributeError):
        return 0.0


def opcode(sass):
    s = re.sub(r"^@!?U?P\w+\s+", "", sass.strip())
    return s.split(" ")[0] if s else "?"


def main():
    path, top = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20
    for name, rows in kernels(path):
        reasons = [c for c in rows[0] if c.startswith("stall_") and "Not Issued" not in c] if rows else []
        total = sum(num(r["Warp Stall Sampling (All Samples)"]) for r in rows) or 1.0
        print(f"== {name[:60]}  samples {total:.0f}")
        by_reason = Counter({c: sum(num(r[c]) for r in rows) for c in reasons})
        print("  by reason: " + ", ".join(f"{c[6:]} {100 * v / total:.1f}%" for c, v in by_reason.most_common(8)))
        by_op = Counter()
        for r in rows:
            by_op[opcode(r["Source"])] += num(r["Warp Stall Sampling (All Samples)"])
        print("  by opcode: " + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in by_op.most_common(10)))
        ranked = sorted(rows, key=lambda r: -num(r["Warp Stall Sampling (All Samples)"]))[:top]
        for r in ranked:
            s = num(r["Warp Stall Sampling (All Samples)"])
            main_reasons = sorted(((num(r[c]), c[6:]) for c in reasons), reverse=True)[:2]
            why = ", ".join(f"{c} {100 * v / s:.0f}%" for v, c in main_reasons if v)
            print(f"  {100 * s / total:5.1f}%  {r['Address']:>6}  {r['Source'].strip()[:58]:58s}  {why}")


if __name__ == "__main__":
    main()
