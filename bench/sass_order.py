"""The order of a kernel's synchronisation and math landmarks in its SASS, read on the CPU machine.

ptxas schedules freely across `bar.arrive` (in v17 it moved WG0's 32 exps above the Scale0 arrive until the exps
were made to depend on a shared-memory load), so an ordering the source asks for must be checked in the SASS.
This compiles a kernel source (through the package's cache), disassembles it with nvdisasm and prints one line
per run of landmarks: named barriers (by their enum names in the source), wgmma issues (RS: A from registers) and
waits, exp2s, shared stores, async-proxy fences, mbarrier waits and arrives, TMA loads.

Usage: python bench/sass_order.py [--source mla_decode_sm90.cu] [--function mla_decode_bf16] [--nvdisasm PATH]
nvdisasm: --nvdisasm, else $NVDISASM, else on PATH; the nvidia-cuda-nvdisasm wheel runs on the CPU machine
(`pip download --no-deps nvidia-cuda-nvdisasm`, unzip, nvidia/cu13/bin/nvdisasm).
Compile options come from FLASHMLA_RT_NVRTC_OPTIONS, as for the package.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))   # the package of this checkout, unless PYTHONPATH has one

LANDMARKS = (   # (pattern on the instruction text, label); the first match wins
    (re.compile(r"BAR\.SYNC(?:\.DEFER_BLOCKING)? 0x([0-9a-f]+)"), "sync {bar}"),
    (re.compile(r"BAR\.ARV 0x([0-9a-f]+)"), "arrive {bar}"),
    (re.compile(r"HGMMA\.(\d+x\d+x\d+)\.\S+ R\d+, R\d+"), "wgmma {0} RS"),
    (re.compile(r"HGMMA\.(\d+x\d+x\d+)"), "wgmma {0} SS"),
    (re.compile(r"WARPGROUP\.DEPBAR\.LE gsb0, 0x(\d+)"), "wgmma wait<{0}>"),
    (re.compile(r"MUFU\.EX2"), "exp2"),
    (re.compile(r"\bSTS(?:\.\d+)? "), "st.shared"),
    (re.compile(r"FENCE\.VIEW\.ASYNC\.S"), "fence.proxy.async"),
    (re.compile(r"SYNCS\.PHASECHK"), "mbarrier wait"),
    (re.compile(r"SYNCS\.ARRIVE"), "mbarrier arrive"),
    (re.compile(r"UTMALDG"), "TMA load"),
)


def barrier_names(source_text: str) -> dict:
    """Named-barrier ids -> enum names (kBar...) from the kernel source."""
    return {int(v): k for k, v in re.findall(r"\b(kBar\w+)\s*=\s*(\d+)", source_text)}


def landmarks(sass: str, function: str, bars: dict) -> list:
    """[(first SASS line number, label, count)] of `function`, consecutive equal labels merged."""
    body = re.search(rf"\.text\.{re.escape(function)}:(.*?)(?:\n\s*\.section|\Z)", sass, re.S)
    if body is None:
        raise SystemExit(f"{function}: not in the disassembly")
    runs = []
    for n, line in enumerate(body.group(1).splitlines()):
        text = re.sub(r"/\*[0-9a-f]+\*/", "", line).strip()
        for pattern, label in LANDMARKS:
            m = pattern.search(text)
            if m:
                bar = bars.get(int(m.group(1), 16), f"0x{m.group(1)}") if "{bar}" in label else None
                name = label.format(*m.groups(), bar=bar)
                if runs and runs[-1][1] == name:
                    runs[-1][2] += 1
                else:
                    runs.append([n, name, 1])
                break
    return runs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="mla_decode_sm90.cu")
    ap.add_argument("--function", default="mla_decode_bf16")
    ap.add_argument("--nvdisasm", default=os.environ.get("NVDISASM") or shutil.which("nvdisasm"))
    args = ap.parse_args()
    if not args.nvdisasm:
        raise SystemExit("nvdisasm not found: pass --nvdisasm or set NVDISASM")
    from flashmla_rt.jit import compiler, sources
    built = compiler.compile_source(args.source,
                                    tuple(os.environ.get("FLASHMLA_RT_NVRTC_OPTIONS", "").split()))
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(built.cubin)
        f.flush()
        sass = subprocess.run([args.nvdisasm, "-c", f.name], check=True, capture_output=True, text=True).stdout
    bars = barrier_names((sources.kernels_dir() / args.source).read_text())
    for n, name, count in landmarks(sass, args.function, bars):
        print(f"{n:6d}  {name}" + (f" x{count}" if count > 1 else ""))


if __name__ == "__main__":
    main()
