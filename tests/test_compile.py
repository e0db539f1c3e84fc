"""CPU tests of runtime compilation: every kernel source compiles with NVRTC for sm_90a without spills or
local memory, the expected entry points exist, and the on-disk cubin cache is keyed on the expanded source
(headers included), survives corruption and concurrent writers. Also `python -m flashmla_rt compile --check`
and `import flashmla_rt` on a machine without a GPU. No GPU needed.
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import flashmla_rt
from flashmla_rt import kernels
from flashmla_rt.jit import compiler, sources

REPO = Path(__file__).resolve().parent.parent
ENTRY_POINTS = {
    kernels.DECODE_SOURCE: {"mla_decode_bf16", "mla_decode_fp16"},
    kernels.COMBINE_SOURCE: {"mla_combine_bf16", "mla_combine_fp16", "mla_combine_wide_bf16", "mla_combine_wide_fp16"},
    kernels.METADATA_SOURCE: {"mla_metadata"},
    kernels.NARROW_SOURCE: {f"mla_decode_narrow{n}_{t}" for n in (16, 32) for t in ("bf16", "fp16")},
}
FAST_SOURCE = kernels.METADATA_SOURCE          # ~0.2 s to compile: used where any source will do


def _env(cache: Path) -> dict:
    env = dict(os.environ)
    env["FLASHMLA_RT_CACHE_DIR"] = str(cache)
    env["FLASHMLA_RT_LAZY"] = "1"       # no import-time compile in the child: each test compiles what it means to
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh, empty cubin cache for one test."""
    d = tmp_path / "cache"
    monkeypatch.setenv("FLASHMLA_RT_CACHE_DIR", str(d))
    return d


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("fmla_cache")


@pytest.fixture(scope="session")
def compiled(session_cache):
    """Every source compiled once into the session cache: {source: CompiledModule}."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLASHMLA_RT_CACHE_DIR", str(session_cache))
        return {src: compiler.compile_source(src, quiet=True) for src in kernels.ALL_SOURCES}


@pytest.fixture
def kdir(tmp_path, monkeypatch):
    """A private copy of kernels_cu/ that sources.expand (and so compile_source) reads from."""
    d = tmp_path / "kernels_cu"
    shutil.copytree(sources.kernels_dir(), d)
    monkeypatch.setattr(sources, "kernels_dir", lambda: d)
    return d


# ---- every kernel compiles, no local memory ---------------------------------------------------------------


def test_all_sources_listed():
    assert set(kernels.ALL_SOURCES) == set(ENTRY_POINTS)
    for src in kernels.ALL_SOURCES:
        assert (sources.kernels_dir() / src).is_file()


@pytest.mark.parametrize("src", kernels.ALL_SOURCES)
def test_source_compiles_for_sm90a(compiled, src):
    mod = compiled[src]
    assert not mod.from_cache, "the session cache starts empty"
    assert mod.source == src
    assert mod.cubin[:4] == b"\x7fELF", "NVRTC must produce a cubin (ELF), not PTX"
    assert mod.path.is_file() and mod.path.read_bytes() == mod.cubin
    assert mod.path.with_suffix(".json").is_file()


@pytest.mark.parametrize("src", kernels.ALL_SOURCES)
def test_expected_entry_points(compiled, src):
    mod = compiled[src]
    if not mod.reports and sys.modules["flashmla_rt"].hopper_available():
        # Seen with NVRTC 13.0 on an H200: a repeat compile of identical source in one process printed no
        # ptxas report (the import already compiled it). CPU CI (a fresh process per cache) checks it for real.
        pytest.skip("NVRTC printed no ptxas report for a repeat in-process compile")
    names = {r.name for r in mod.reports}
    assert names == ENTRY_POINTS[src]
    for name in names:                       # extern "C": unmangled symbol in the cubin
        assert name.encode() + b"\0" in mod.cubin


@pytest.mark.parametrize("src", kernels.ALL_SOURCES)
def test_no_spills_no_local_memory(compiled, src):
    for r in compiled[src].reports:
        assert r.spill_stores == 0 and r.spill_loads == 0, f"{r.name} spills: {r}"
        assert r.stack_bytes == 0, f"{r.name} uses a stack frame (local memory): {r}"
        assert not r.uses_local_memory
        assert not r.wgmma_serialized, f"{r.name}: ptxas serialised its wgmma pipeline"
        assert 0 < r.registers <= 255, r


@pytest.mark.parametrize("src", [kernels.DECODE_SOURCE, kernels.NARROW_SOURCE, kernels.COMBINE_SOURCE])
def test_trace_builds_compile_and_mark_every_cta(compiled, session_cache, monkeypatch, src):
    """-DFMLA_TRACE=1 (bench/trace_decode.py, bench/trace_ctas.py) builds the decode kernels and the combine with
    the per-CTA timeline array, also without spills; the production build has none of it."""
    monkeypatch.setenv("FLASHMLA_RT_CACHE_DIR", str(session_cache))
    traced = compiler.compile_source(src, ("-DFMLA_TRACE=1",), quiet=True)
    for r in traced.reports:
        assert r.spill_stores == 0 and r.spill_loads == 0 and not r.uses_local_memory, f"{r.name}: {r}"
    assert b"fmla_trace_cta" in Path(traced.path).read_bytes()
    assert b"fmla_trace_cta" not in Path(compiled[src].path).read_bytes()


@pytest.mark.parametrize("src", kernels.ALL_SOURCES)
def test_cubins_are_complete_elf_images(compiled, src):
    """The cached image is as long as its ELF headers say (CuPy's getCUBIN alone drops the last byte, and then
    cuobjdump/nvdisasm refuse the file)."""
    cubin = compiled[src].cubin
    assert cubin[:4] == b"\x7fELF"
    assert len(cubin) == compiler.elf_size(cubin)
    assert compiled[src].path.read_bytes() == cubin


def test_complete_cubin_restores_a_truncated_image(compiled):
    cubin = compiled[kernels.METADATA_SOURCE].cubin
    assert compiler.complete_cubin(cubin[:-1]) == cubin        # the missing byte is the zero that ends the image
    assert compiler.complete_cubin(cubin) is cubin
    assert compiler.complete_cubin(b"not an elf") == b"not an elf"


@pytest.mark.parametrize("variant", kernels.DECODE_VARIANTS.values(), ids=lambda v: v.name)
def test_decode_kernel_fits_the_launch(compiled, variant):
    """Each decode launch: registers x threads must fit Hopper's 64K register file, and the dynamic shared
    memory must fit the 227 KB opt-in limit."""
    reports = [r for r in compiled[variant.source].reports if r.name.startswith(variant.entry + "_")]
    if not compiled[variant.source].reports:
        pytest.skip("NVRTC printed no ptxas report (NVRTC 13.0 omits it for a repeat compile in one process)")
    assert len(reports) == 2
    for r in reports:
        assert r.registers * variant.threads <= 65536, r
        assert r.smem_bytes + variant.smem_bytes <= 227 * 1024, r


def test_parse_ptxas_log():
    log = textwrap.dedent("""\
        ptxas info    : Compiling entry function 'k1' for 'sm_90a'
        ptxas info    : Function properties for k1
            24 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
        ptxas info    : Used 40 registers, 1024 bytes smem, 400 bytes cmem[0]
        ptxas info    : Compiling entry function 'k2' for 'sm_90a'
        ptxas info    : Function properties for k2
            0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
        ptxas info    : Used 12 registers, 380 bytes cmem[0]
        """)
    k1, k2 = compiler.parse_ptxas_log(log)
    assert (k1.name, k1.registers, k1.smem_bytes, k1.stack_bytes, k1.spill_stores, k1.spill_loads) == \
        ("k1", 40, 1024, 24, 8, 12)
    assert k1.uses_local_memory
    assert (k2.name, k2.registers, k2.smem_bytes, k2.stack_bytes) == ("k2", 12, 0, 0)
    assert not k2.uses_local_memory
    assert not k1.wgmma_serialized and not k2.wgmma_serialized


def test_parse_ptxas_log_flags_wgmma_serialisation():
    warning = ("ptxas warning : (C7519) Potential Performance Loss: wgmma.mma_async instructions are serialized "
               "due to the presence of Warpgroup.Arrive instructions in a divergent path in the function 'k2'.")
    log = ("ptxas info    : Compiling entry function 'k1' for 'sm_90a'\n"
           "ptxas info    : Compiling entry function 'k2' for 'sm_90a'\n" + warning + "\n")
    k1, k2 = compiler.parse_ptxas_log(log)
    assert not k1.wgmma_serialized and k2.wgmma_serialized


def test_compile_error_carries_the_log(kdir, cache):
    (kdir / "broken.cu").write_text('#include "common/nvrtc_shim.cuh"\nextern "C" __global__ void f() { oops; }\n')
    with pytest.raises(compiler.CompileError, match=r"broken\.cu(.|\n)*oops"):
        compiler.compile_source("broken.cu", quiet=True)
    assert not list(cache.glob("broken-*")), "a failed compile must leave no cache entry"


def test_setmaxnreg_budget_is_checked_at_compile_time(kdir, cache):
    """setmaxnreg moves registers only within the CTA's launch allocation: a producer keeping more than the
    consumers' increase leaves makes setmaxnreg.inc wait forever (a producer at 32 hung every launch, call 42).
    The seesaw source refuses to compile such a split."""
    src = kdir / kernels.DECODE_SOURCE
    text = src.read_text()
    assert "kConsumerRegs = 240, kProducerRegs = 24;" in text
    src.write_text(text.replace("kProducerRegs = 24;", "kProducerRegs = 32;"))
    with pytest.raises(compiler.CompileError, match="setmaxnreg"):
        compiler.compile_source(kernels.DECODE_SOURCE, quiet=True)


# ---- the cubin cache ---------------------------------------------------------------------------------------


def test_cache_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FLASHMLA_RT_CACHE_DIR", str(tmp_path / "x"))
    assert compiler.cache_dir() == tmp_path / "x"
    monkeypatch.delenv("FLASHMLA_RT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compiler.cache_dir() == tmp_path / "xdg" / "flashmla_rt"


@pytest.mark.parametrize("src", kernels.ALL_SOURCES)
def test_second_compile_hits_the_cache(compiled, session_cache, monkeypatch, src):
    monkeypatch.setenv("FLASHMLA_RT_CACHE_DIR", str(session_cache))
    t0 = time.perf_counter()
    again = compiler.compile_source(src, quiet=True)
    elapsed = time.perf_counter() - t0
    first = compiled[src]
    assert again.from_cache
    assert again.path == first.path
    assert again.cubin == first.cubin
    assert again.reports == first.reports
    assert elapsed < 0.5, f"a cache hit took {elapsed:.2f} s"


def test_cache_miss_prints_once_unless_quiet(cache, capsys):
    compiler.compile_source(FAST_SOURCE)
    assert "compiling mla_metadata.cu" in capsys.readouterr().err
    assert compiler.compile_source(FAST_SOURCE).from_cache
    assert capsys.readouterr().err == ""


def test_use_cache_false_neither_reads_nor_writes(cache):
    mod = compiler.compile_source(FAST_SOURCE, use_cache=False, quiet=True)
    assert not mod.from_cache
    assert not cache.exists() or not any(cache.iterdir())
    compiler.compile_source(FAST_SOURCE, quiet=True)
    assert not compiler.compile_source(FAST_SOURCE, use_cache=False, quiet=True).from_cache


def test_options_change_the_key(cache):
    a = compiler.compile_source(FAST_SOURCE, quiet=True)
    b = compiler.compile_source(FAST_SOURCE, ("-DFLASHMLA_RT_TEST_OPTION=1",), quiet=True)
    assert not b.from_cache and b.path != a.path
    assert compiler.compile_source(FAST_SOURCE, quiet=True).from_cache


def test_editing_an_included_header_changes_the_key(kdir, cache):
    src = kernels.COMBINE_SOURCE                      # includes common/softmax.cuh and common/decode_params.cuh
    first = compiler.compile_source(src, quiet=True)
    meta_first = compiler.compile_source(FAST_SOURCE, quiet=True)
    assert not first.from_cache
    assert compiler.compile_source(src, quiet=True).from_cache

    header = kdir / "common" / "softmax.cuh"
    assert "softmax.cuh" in sources.expand(src)
    header.write_text(header.read_text() + "\n// edited by test_compile\n")
    edited = compiler.compile_source(src, quiet=True)
    assert not edited.from_cache, "a header edit must invalidate the cached cubin"
    assert edited.path != first.path
    assert compiler.compile_source(src, quiet=True).from_cache
    # A source that does not include the edited header keeps its entry.
    assert "softmax.cuh" not in sources.expand(FAST_SOURCE)
    again = compiler.compile_source(FAST_SOURCE, quiet=True)
    assert again.from_cache and again.path == meta_first.path

    # A header included only indirectly (softmax.cuh -> nvrtc_shim.cuh) is part of the key too.
    shim = kdir / "common" / "nvrtc_shim.cuh"
    shim.write_text(shim.read_text() + "\n// edited by test_compile\n")
    assert not compiler.compile_source(src, quiet=True).from_cache
    assert not compiler.compile_source(FAST_SOURCE, quiet=True).from_cache


@pytest.mark.parametrize("damage", ["garbage_json", "empty_json", "wrong_fields", "missing_json", "missing_cubin"])
def test_corrupt_cache_entries_are_recompiled(cache, damage):
    good = compiler.compile_source(FAST_SOURCE, quiet=True)
    report = good.path.with_suffix(".json")
    if damage == "garbage_json":
        report.write_bytes(b"\x00\xffnot json{")
    elif damage == "empty_json":
        report.write_bytes(b"")
    elif damage == "wrong_fields":
        report.write_text(json.dumps([{"name": "mla_metadata", "bogus": 1}]))
    elif damage == "missing_json":
        report.unlink()
    else:
        good.path.unlink()
    again = compiler.compile_source(FAST_SOURCE, quiet=True)
    assert not again.from_cache
    assert again.cubin == good.cubin and again.reports == good.reports
    # ... and the entry was rewritten, so the next lookup hits.
    hit = compiler.compile_source(FAST_SOURCE, quiet=True)
    assert hit.from_cache and hit.cubin == good.cubin and hit.reports == good.reports
    assert not list(cache.glob("*.tmp"))


def test_truncated_cubin_is_recompiled(cache):
    good = compiler.compile_source(FAST_SOURCE, quiet=True)
    good.path.write_bytes(good.cubin[:100])
    again = compiler.compile_source(FAST_SOURCE, quiet=True)
    assert again.cubin == good.cubin


_CHILD = textwrap.dedent("""\
    import hashlib, sys, time
    from flashmla_rt.jit import compiler
    start = float(sys.argv[2])
    while time.time() < start:          # line both processes up so their compiles overlap
        time.sleep(0.001)
    m = compiler.compile_source(sys.argv[1], quiet=True)
    print(m.from_cache, hashlib.sha256(m.cubin).hexdigest(), m.path)
    """)


def test_concurrent_compiles_share_one_valid_entry(cache):
    src = kernels.COMBINE_SOURCE
    start = time.time() + 1.5                           # after both interpreters have imported the package
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, src, repr(start)], env=_env(cache),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(out.split())
    paths = {r[2] for r in results}
    assert len(paths) == 1
    # Only this source's entry (on a Hopper machine the children's `import flashmla_rt` compiles the rest too).
    assert sorted(p.name for p in cache.iterdir() if p.name.startswith(Path(src).stem + "-")) == sorted([Path(r[2]).name for r in results[:1]] +
                                                             [Path(results[0][2]).with_suffix(".json").name])
    hit = compiler.compile_source(src, quiet=True)
    assert hit.from_cache and str(hit.path) == results[0][2]
    assert hit.cubin[:4] == b"\x7fELF"
    if hit.reports or not flashmla_rt.hopper_available():
        # On the H200 image (NVRTC 13.0) a compile whose PTX was compiled before, even in another process,
        # printed no ptxas report; CPU CI (NVRTC 13.5, fresh cache) always checks the report here.
        assert hit.reports and {r.name for r in hit.reports} == ENTRY_POINTS[src]
    import hashlib
    assert hashlib.sha256(hit.cubin).hexdigest() in {r[1] for r in results}


# ---- command line ------------------------------------------------------------------------------------------


def test_cli_compile_check(tmp_path):
    cache = tmp_path / "cli_cache"
    r = subprocess.run([sys.executable, "-m", "flashmla_rt", "compile", "--check"], env=_env(cache), cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK: no spills, no local memory, no wgmma serialisation" in r.stdout
    for names in ENTRY_POINTS.values():
        for name in names:
            assert name in r.stdout
    assert str(cache) in r.stdout
    assert len(list(cache.glob("*.cubin"))) == len(kernels.ALL_SOURCES)


def test_cli_usage_error():
    r = subprocess.run([sys.executable, "-m", "flashmla_rt"], env=_env(Path("/nonexistent")), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "usage" in r.stderr


# ---- sources.expand ----------------------------------------------------------------------------------------


def test_expand_inlines_quoted_includes_once(tmp_path, monkeypatch):
    root = tmp_path / "k"
    (root / "sub").mkdir(parents=True)
    (root / "a.cuh").write_text("// A_BODY\n#include <cuda_fp16.h>\n")
    (root / "sub" / "c.cuh").write_text('#include "a.cuh"\n// C_BODY\n')       # a.cuh found via the root
    (root / "sub" / "b.cuh").write_text('#include "c.cuh"\n// B_BODY\n')       # c.cuh found beside b.cuh
    (root / "main.cu").write_text('#include "a.cuh"\n  #  include "sub/b.cuh"\n#include "a.cuh"\n'
                                  "#include <cuda_bf16.h>\n// MAIN_BODY\n")
    monkeypatch.setattr(sources, "kernels_dir", lambda: root)
    text = sources.expand("main.cu")
    for marker in ("A_BODY", "B_BODY", "C_BODY", "MAIN_BODY"):
        assert text.count(marker) == 1, marker
    assert text.index("A_BODY") < text.index("C_BODY") < text.index("B_BODY") < text.index("MAIN_BODY")
    assert '#include "' not in text and 'include "' not in text
    assert text.count("#include <cuda_bf16.h>") == 1 and text.count("#include <cuda_fp16.h>") == 1
    assert "already included: a.cuh" in text

    (root / "bad.cu").write_text('#include "nope.cuh"\n')
    with pytest.raises(FileNotFoundError, match="nope.cuh"):
        sources.expand("bad.cu")


@pytest.mark.parametrize("src", kernels.ALL_SOURCES)
def test_expand_real_sources_is_self_contained(src):
    text = sources.expand(src)
    assert not sources._INCLUDE.search(text), "a quoted include was left for NVRTC to resolve"
    # nvrtc_shim.cuh is included by several headers but inlined once (its body holds the <cuda_bf16.h> line).
    assert text.count("#include <cuda_bf16.h>") == 1
    assert text.count("#include <cuda_fp16.h>") == 1


def test_digest_separates_parts():
    assert sources.digest("ab", "c") != sources.digest("a", "bc")
    assert sources.digest("x") == sources.digest("x")


# ---- import without a GPU ----------------------------------------------------------------------------------


def _gpu_present() -> bool:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:       # noqa: BLE001 - no driver, no device
        return False


def test_import_without_gpu():
    assert flashmla_rt.__version__
    assert callable(flashmla_rt.flash_mla_with_kvcache) and callable(flashmla_rt.get_mla_metadata)
    if _gpu_present():
        pytest.skip("a GPU is present: hopper_available() depends on it")
    assert flashmla_rt.hopper_available() is False


def test_import_compiles_nothing_without_gpu(tmp_path):
    if _gpu_present():
        pytest.skip("a GPU is present: import compiles kernels for it")
    cache = tmp_path / "import_cache"
    r = subprocess.run([sys.executable, "-c", "import flashmla_rt; print(flashmla_rt.hopper_available())"],
                       env=_env(cache), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
    assert not cache.exists() or not any(cache.iterdir())


def test_import_without_cupy(tmp_path):
    code = textwrap.dedent("""\
        import sys
        sys.modules["cupy"] = None          # any `import cupy` now fails
        import numpy as np
        import flashmla_rt
        assert flashmla_rt.hopper_available() is False
        meta, splits = flashmla_rt.get_mla_metadata(np.array([100, 30], np.int32), 16, 1)
        assert meta.shape[1] == 8 and splits.tolist()[0] == 0
        print("ok")
        """)
    r = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path / "c"), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_a_repeat_compile_without_a_report_reuses_the_first(monkeypatch):
    """NVRTC 13.0 can omit the ptxas report when a source is compiled again in the same process: the earlier
    report of the same source and options stands in for it. The first report is injected, so the test does not
    depend on what this NVRTC prints (on 13.0 even the first compile in a test process may print nothing)."""
    report = compiler.KernelReport(name="fmla_memo_probe", registers=40, smem_bytes=0, stack_bytes=0, spill_stores=0,
                                   spill_loads=0)
    monkeypatch.setattr(compiler, "_reports_seen", {})
    monkeypatch.setattr(compiler, "parse_ptxas_log", lambda log: (report,))
    first = compiler.compile_source(FAST_SOURCE, use_cache=False, quiet=True)
    assert first.reports == (report,)
    monkeypatch.setattr(compiler, "parse_ptxas_log", lambda log: ())
    again = compiler.compile_source(FAST_SOURCE, use_cache=False, quiet=True)
    assert again.reports == first.reports and again.cubin == first.cubin


def test_bench_l2_rate_probe_compiles():
    """bench/l2_rate_probe.py's kernel (a device-call probe) builds through the package's compiler."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("l2_rate_probe", REPO / "bench" / "l2_rate_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    cubin = probe.build()
    assert cubin[:4] == b"\x7fELF"
    assert all(c[2] * c[3] <= 27 * 8192 for c in probe.CONFIGS)       # each fits the opted-in shared memory
