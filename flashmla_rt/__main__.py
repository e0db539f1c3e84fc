"""Command line: `python -m flashmla_rt demo | compile [--check] | bench [...]`."""
from __future__ import annotations

import argparse
import sys


def _compile(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m flashmla_rt compile",
                                 description="Compile every kernel for sm_90a with NVRTC (no GPU needed) and "
                                             "print registers, shared memory, spills and local memory.")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 on any spill, local-memory use or serialised wgmma pipeline")
    ap.add_argument("--no-cache", action="store_true", help="recompile even when a cached cubin exists")
    args = ap.parse_args(argv)
    from .jit import compiler
    from .kernels import ALL_SOURCES, _join_background
    _join_background()              # let the import-time compile finish before compiling again ourselves
    bad = 0
    print(f"NVRTC {'.'.join(map(str, compiler.nvrtc_version()))}, sm_90a, cache {compiler.cache_dir()}")
    print(f"{'kernel':<26}{'source':<28}{'regs':>6}{'smem B':>9}{'stack B':>9}{'spill st':>10}{'spill ld':>10}")
    for src in ALL_SOURCES:
        mod = compiler.compile_source(src, use_cache=not args.no_cache, quiet=True)
        if not mod.reports:
            print(f"{src}: NVRTC printed no ptxas report (repeat compile in one process?); cannot check it")
            bad += 1
        for r in sorted(mod.reports, key=lambda r: r.name):
            flag = ("  <-- local memory" if r.uses_local_memory else "") + \
                   ("  <-- wgmma serialised" if r.wgmma_serialized else "")
            bad += r.uses_local_memory or r.wgmma_serialized
            print(f"{r.name:<26}{src:<28}{r.registers:>6}{r.smem_bytes:>9}{r.stack_bytes:>9}{r.spill_stores:>10}"
                  f"{r.spill_loads:>10}{flag}")
    if args.check and bad:
        print(f"FAIL: {bad} kernel(s) spill, use local memory or serialise wgmma", file=sys.stderr)
        return 1
    print("OK: no spills, no local memory, no wgmma serialisation" if not bad
          else f"{bad} kernel(s) use local memory or serialise wgmma")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = ("demo", "compile", "bench")
    if not argv or argv[0] not in commands:
        print(f"usage: python -m flashmla_rt {{{'|'.join(commands)}}} [options]", file=sys.stderr)
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "compile":
        return _compile(rest)
    if cmd == "demo":
        from .demo import main as demo_main
        return demo_main(rest)
    from .bench import main as bench_main
    return bench_main(rest)


if __name__ == "__main__":
    sys.exit(main())
