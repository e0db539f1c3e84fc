"""Builds a kernels_cu/ source as a host C++20 program for the CPU emulation tests (test_metadata_emulated.py,
test_chunks_emulated.py): kernels_cu/common/ is copied with tests/emulate/'s headers replacing the CUDA shim, and
`main_cpp` (in tests/emulate/) is compiled against it. Skips the calling test where the toolchain cannot build
C++20 std::barrier code (the warp emulator's collectives)."""
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CXX = shutil.which("g++") or shutil.which("clang++")


def toolchain_has_cxx20_barrier(work: pathlib.Path) -> bool:
    probe = work / "probe.cpp"
    probe.write_text("#include <barrier>\nint main() { std::barrier<> b(1); b.arrive_and_wait(); }\n")
    return subprocess.run([CXX, "-std=c++20", "-pthread", "-o", str(work / "probe"), str(probe)],
                          capture_output=True).returncode == 0


def build_host_program(work: pathlib.Path, main_cpp: str, kernel_sources=(), headers=("nvrtc_shim.cuh", "warp.h"),
                       force_includes=()) -> pathlib.Path:
    """The executable of tests/emulate/<main_cpp>; `kernel_sources` from kernels_cu/ sit beside it, `headers`
    from tests/emulate/ go into its common/ (nvrtc_shim.cuh replaces the CUDA one), `force_includes` are -include'd."""
    if CXX is None:
        pytest.skip("no C++ compiler for the emulator")
    shutil.copytree(ROOT / "kernels_cu" / "common", work / "common")
    for name in kernel_sources:
        shutil.copy(ROOT / "kernels_cu" / name, work)
    for name in headers:
        shutil.copy(ROOT / "tests" / "emulate" / name, work / "common")
    shutil.copy(ROOT / "tests" / "emulate" / main_cpp, work)
    exe = work / pathlib.Path(main_cpp).stem
    includes = [arg for name in force_includes for arg in ("-include", name)]
    built = subprocess.run([CXX, "-std=c++20", "-O1", "-pthread", "-I", str(work / "common"), *includes, "-o",
                            str(exe), str(work / main_cpp)], capture_output=True, text=True)
    if built.returncode != 0 and not toolchain_has_cxx20_barrier(work):
        pytest.skip(f"{CXX} cannot build C++20 std::barrier code: {built.stderr[:200]}")
    assert built.returncode == 0, built.stderr
    return exe
