"""experiments.sh's last step: each variant's bench rounds (/tmp/bench_<name>_r<k>/*.json) into one table of median
graph µs per row, each against the first variant, with the rounds' spread; and $OUT/bench_<name>.json, the first
round's JSON with every row's per-round graph µs and their median added (`graph_us_rounds`, `graph_us_median`).
With --best it prints only the name of the variant whose medians are lowest against the first variant's (geometric
mean over the rows all variants share), for experiments.sh's SUITE_ON_BEST step.
Usage: python3 bench/experiments_summary.py [--best] OUT NAME [NAME ...]"""
import glob
import json
import math
import statistics
import sys
from pathlib import Path


def rounds_of(name: str) -> list:
    """The variant's bench JSONs, round 1 first (rounds whose bench wrote nothing are left out)."""
    dirs = sorted(glob.glob(f"/tmp/bench_{name}_r*"), key=lambda d: int(d.rsplit("_r", 1)[1]))
    found = []
    for d in dirs:
        files = sorted(Path(d).glob("*.json"))
        if files:
            found.append(json.loads(files[-1].read_text()))
    return found


def graph_us(doc: dict) -> dict:
    return {r["row"]: r["ours"]["graph"]["us"] for r in doc["rows"] if r.get("ours", {}).get("graph")}


def medians_of(per_round: list) -> dict:
    """{row: (median graph µs, [µs per round])} over the rows every round measured."""
    rows = sorted(set.intersection(*(set(p) for p in per_round)))
    return {row: (statistics.median(p[row] for p in per_round), [p[row] for p in per_round]) for row in rows}


def variant_medians(docs: list) -> dict:
    """medians_of over a variant's bench JSONs (rounds_of)."""
    return medians_of([graph_us(d) for d in docs])


def best_variant(medians: dict) -> str:
    """The variant with the lowest geometric mean of median / first variant's median over the shared rows; the
    first variant (the base) on a tie or when no row is shared."""
    ref = next(iter(medians))
    shared = set.intersection(*(set(m) for m in medians.values()))
    if not shared:
        return ref
    def score(name):
        return sum(math.log(medians[name][r][0] / medians[ref][r][0]) for r in shared) / len(shared)
    return min(medians, key=lambda name: (score(name), name != ref))


def summarize(out: Path, names: list) -> None:
    medians, labels = {}, {}
    for name in names:
        docs = rounds_of(name)
        if not docs:
            print(f"=== summary: {name} has no bench results")
            continue
        medians[name] = variant_medians(docs)
        first = docs[0]
        for r in first["rows"]:
            labels[r["row"]] = r["label"]
            if r["row"] in medians[name]:
                r["ours"]["graph_us_median"], r["ours"]["graph_us_rounds"] = medians[name][r["row"]]
        (out / f"bench_{name}.json").write_text(json.dumps(first, indent=1))
    if not medians:
        return
    ref = next(iter(medians))
    print(f"=== summary: median graph µs over rounds (min-max), against {ref}")
    for row in sorted(medians[ref]):
        cells = []
        for name, m in medians.items():
            if row not in m:
                continue
            med, all_us = m[row]
            cells.append(f"{name} {med:7.1f} ({med / medians[ref][row][0] - 1:+5.1%}; {min(all_us):.1f}-{max(all_us):.1f})")
        print(f"{row:3d} {labels.get(row, ''):<30} " + "  ".join(cells))


if __name__ == "__main__":
    if sys.argv[1] == "--best":
        found = {name: variant_medians(docs) for name in sys.argv[3:] if (docs := rounds_of(name))}
        base = sys.argv[3]
        print(best_variant(found) if base in found else base)   # no base timings: nothing can be called better
    else:
        summarize(Path(sys.argv[1]), sys.argv[2:])
