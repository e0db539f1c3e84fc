"""Locate `kernels_cu/` and expand a kernel source into one self-contained translation unit.

`#include "x.cuh"` lines (quotes, relative to the including file or to kernels_cu/) are inlined
recursively, each file once, so the expanded text is everything the compiler sees from us and its hash
is a sound cache key (CuPy's own cache ignores included headers). Angle-bracket includes are left alone.
"""
from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path

_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"[ \t]*(?://[^\n]*)?$', re.M)


@lru_cache(maxsize=1)
def kernels_dir() -> Path:
    """kernels_cu/ inside an installed wheel (flashmla_rt/kernels_cu) or beside the package in a checkout."""
    pkg = Path(__file__).resolve().parent.parent
    for cand in (pkg / "kernels_cu", pkg.parent / "kernels_cu"):
        if cand.is_dir():
            return cand
    raise RuntimeError(f"flashmla_rt: kernels_cu/ not found next to {pkg} (broken install?)")


def expand(name: str) -> str:
    """Source of kernels_cu/<name> with its quoted includes inlined."""
    root = kernels_dir()
    seen: set[Path] = set()

    def inline(path: Path) -> str:
        path = path.resolve()
        if path in seen:
            return f"// (already included: {path.name})\n"
        seen.add(path)
        text = path.read_text()

        def repl(m: re.Match) -> str:
            inc = m.group(1)
            for base in (path.parent, root):
                if (base / inc).is_file():
                    return f"// ---- begin {inc}\n{inline(base / inc)}\n// ---- end {inc}\n"
            raise FileNotFoundError(f"{path.name}: included file {inc!r} not found under {root}")

        return _INCLUDE.sub(repl, text)

    return inline(root / name)


def digest(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()
