"""NVRTC compilation for sm_90a with our own on-disk cubin cache.

We call NVRTC through CuPy (its `-I` list finds the CUDA headers shipped in the pip wheels) but own the
options and the cache: the key is sha256(expanded source, options, NVRTC version, package version), the
entry is written through a temp file + `os.replace` (atomic, so concurrent processes cannot corrupt it),
and the ptxas report (registers, smem, spills) is stored next to the cubin. Compiling needs no GPU.
"""
from __future__ import annotations

import ctypes
import hashlib
import io
import json
import os
import re
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import sources

ARCH_OPTIONS = ("-arch=sm_90a", "-std=c++17", "--device-as-default-execution-space", "-ftz=true",
                "-Xptxas=-v")


class CompileError(RuntimeError):
    """NVRTC rejected a kernel source; the message carries the compiler log."""


@dataclass(frozen=True)
class KernelReport:
    """ptxas resource usage of one entry point."""
    name: str
    registers: int
    smem_bytes: int
    stack_bytes: int
    spill_stores: int
    spill_loads: int
    wgmma_serialized: bool = False   # ptxas warned that it serialised the wgmma pipeline (a large slowdown)

    @property
    def uses_local_memory(self) -> bool:
        return self.stack_bytes > 0 or self.spill_stores > 0 or self.spill_loads > 0


@dataclass(frozen=True)
class CompiledModule:
    source: str                 # file name under kernels_cu/
    cubin: bytes
    reports: tuple[KernelReport, ...]
    from_cache: bool
    path: Path


def cache_dir() -> Path:
    """FLASHMLA_RT_CACHE_DIR, else $XDG_CACHE_HOME/flashmla_rt, else ~/.cache/flashmla_rt."""
    env = os.environ.get("FLASHMLA_RT_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "flashmla_rt"


def nvrtc_version() -> tuple[int, int]:
    from cupy.cuda import nvrtc
    return tuple(nvrtc.getVersion())


def _full_options(extra: tuple[str, ...]) -> tuple[str, ...]:
    from cupy._core import core
    try:
        base = core.assemble_cupy_compiler_options(())
    except RuntimeError as e:          # CuPy found no CUDA runtime headers
        raise RuntimeError(f"flashmla_rt: NVRTC cannot find the CUDA headers ({e}); install the "
                           "package with the cu12 or cu13 extra (cuda-toolkit[nvrtc,cudart])") from e
    # Developer knob (e.g. "-DFMLA_TRACE=1" for the seesaw timeline probe); part of the cache key like any option.
    debug = tuple(os.environ.get("FLASHMLA_RT_NVRTC_OPTIONS", "").split())
    return tuple(base) + ARCH_OPTIONS + tuple(extra) + debug


def parse_ptxas_log(log: str) -> tuple[KernelReport, ...]:
    reports = []
    for chunk in log.split("Compiling entry function '")[1:]:
        name = chunk.split("'", 1)[0]

        def num(pattern: str) -> int:
            m = re.search(pattern, chunk)
            return int(m.group(1)) if m else 0
        reports.append(KernelReport(name=name, registers=num(r"Used (\d+) registers"),
                                    smem_bytes=num(r"(\d+) bytes smem"),
                                    stack_bytes=num(r"(\d+) bytes stack frame"),
                                    spill_stores=num(r"(\d+) bytes spill stores"),
                                    spill_loads=num(r"(\d+) bytes spill loads"),
                                    wgmma_serialized=_wgmma_serialized(log, name)))
    return tuple(reports)


def _wgmma_serialized(log: str, name: str) -> bool:
    """ptxas "wgmma.mma_async instructions are serialized ..." warnings name the function; one that names
    none is counted against every function."""
    for line in log.splitlines():
        if "wgmma" in line and "serializ" in line and ("'" not in line or f"'{name}'" in line):
            return True
    return False


# Part of the cache key: entries written before complete_cubin existed lack their last byte.
_CUBIN_FORMAT = "complete-elf-1"


def elf_size(image: bytes) -> int:
    """Bytes an ELF64 image's headers say it spans: section contents and both header tables."""
    if len(image) < 64 or image[:4] != b"\x7fELF":
        return len(image)
    phoff, shoff = struct.unpack_from("<QQ", image, 32)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", image, 54)
    end = max(phoff + phentsize * phnum, shoff + shentsize * shnum)
    for i in range(shnum):
        at = shoff + i * shentsize
        if at + 40 > len(image):
            break
        (sh_type,) = struct.unpack_from("<I", image, at + 4)
        sh_offset, sh_size = struct.unpack_from("<QQ", image, at + 24)
        if sh_type != 8:                                   # SHT_NOBITS occupies no file bytes
            end = max(end, sh_offset + sh_size)
    return end


def complete_cubin(cubin: bytes, prog_ptr: int | None = None) -> bytes:
    """CuPy's nvrtc.getCUBIN returns the image minus its last byte (it sizes the buffer like NUL-terminated
    PTX), which the driver tolerates but cuobjdump/nvdisasm reject. Re-read it through NVRTC's own
    size and copy calls when the library is reachable; else pad to the size the ELF headers declare
    (the missing byte ends the program-header table's last alignment field, which is zero)."""
    need = elf_size(cubin)
    if len(cubin) >= need:
        return cubin
    if prog_ptr:
        try:
            lib = ctypes.CDLL("libnvrtc.so.%d" % nvrtc_version()[0])
            size = ctypes.c_size_t()
            if lib.nvrtcGetCUBINSize(ctypes.c_void_p(prog_ptr), ctypes.byref(size)) == 0 and size.value >= need:
                buf = ctypes.create_string_buffer(size.value)
                if lib.nvrtcGetCUBIN(ctypes.c_void_p(prog_ptr), buf) == 0:
                    return buf.raw
        except OSError:
            pass
    return cubin + bytes(need - len(cubin))


# Reports already seen in this process, by cache key: NVRTC 13.0 was seen printing no ptxas report for a repeat
# compile of the same source in one process (the cubin is fine), so a later compile reuses the earlier report.
_reports_seen: dict[str, tuple] = {}


def _reports_or_seen(key: str, reports: tuple) -> tuple:
    """`reports`, remembered under `key`; when empty, the ones an earlier compile of `key` left (or ())."""
    if reports:
        _reports_seen[key] = reports
        return reports
    return _reports_seen.get(key, ())


def compile_source(name: str, extra_options: tuple[str, ...] = (), *, use_cache: bool = True,
                   quiet: bool = False) -> CompiledModule:
    """Compile kernels_cu/<name> (includes inlined) to an sm_90a cubin, through the disk cache."""
    from .. import __version__
    text = sources.expand(name)
    options = _full_options(extra_options)
    ver = nvrtc_version()
    # Options hold absolute -I paths of this environment, which is what we want in the key.
    key = sources.digest(text, "\n".join(options), "nvrtc=%d.%d" % ver, __version__, _CUBIN_FORMAT)[:24]
    stem = f"{Path(name).stem}-{key}"
    directory = cache_dir()
    cubin_path, report_path = directory / f"{stem}.cubin", directory / f"{stem}.json"
    if use_cache and cubin_path.is_file() and report_path.is_file():
        try:
            entry = json.loads(report_path.read_text())
            cubin = cubin_path.read_bytes()
            if entry["cubin_sha256"] == hashlib.sha256(cubin).hexdigest():
                reports = _reports_or_seen(key, tuple(KernelReport(**r) for r in entry["reports"]))
                return CompiledModule(name, cubin, reports, True, cubin_path)
        except (OSError, ValueError, TypeError, KeyError):
            pass                                   # unreadable or damaged entry: recompile and overwrite it
    if not quiet:
        print(f"flashmla_rt: compiling {name} for sm_90a with NVRTC {ver[0]}.{ver[1]} "
              f"(first use; cached in {directory})", file=sys.stderr, flush=True)
    from cupy.cuda.compiler import CompileException, _NVRTCProgram
    log = io.StringIO()
    prog = _NVRTCProgram(text, name, method="cubin")
    try:
        cubin, _ = prog.compile(options, log_stream=log)
    except CompileException as e:
        raise CompileError(f"flashmla_rt: NVRTC failed on kernels_cu/{name}:\n{e}") from None
    cubin = complete_cubin(bytes(cubin), prog.ptr)
    reports = _reports_or_seen(key, parse_ptxas_log(log.getvalue()))
    # Still none (the first compile of the process lost it): `compile --check` treats that as a failure.
    if use_cache:
        directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(cubin_path, cubin)
        _atomic_write(report_path, json.dumps({"cubin_sha256": hashlib.sha256(cubin).hexdigest(),
                                               "reports": [r.__dict__ for r in reports]}).encode())
    return CompiledModule(name, cubin, reports, False, cubin_path)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def compile_text(text: str, stem: str) -> bytes:
    """An sm_90a cubin of CUDA source `text` that is not one of kernels_cu/ (a bench probe): compiled as
    `<stem>.cu` with kernels_cu/ on its include path, never cached."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{stem}.cu"
        path.write_text(text)
        return compile_source(str(path), use_cache=False, quiet=True).cubin

