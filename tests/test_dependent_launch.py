"""The combine's launch as a programmatic dependent (cuLaunchKernelEx through ctypes), on the CPU: the
structures' layout against cuda.h, what reaches the driver, the plain fallback, and launch errors."""
import ctypes

import pytest

from flashmla_rt import _dependent_launch as dl


def test_structures_match_cuda_h():
    """CUlaunchConfig: 7 uint32, then hStream at 32, attrs at 40, numAttrs at 48, 56 bytes; CUlaunchAttribute:
    id, padding to 8, a 64-byte value union: 72 bytes."""
    assert ctypes.sizeof(dl.LaunchConfig) == 56
    assert [getattr(dl.LaunchConfig, f).offset for f in ("sharedMemBytes", "hStream", "attrs", "numAttrs")] == \
        [24, 32, 40, 48]
    assert ctypes.sizeof(dl.LaunchAttribute) == 72 and dl.LaunchAttribute.value.offset == 8


def test_launch_passes_shape_stream_params_and_attribute(route_dependent_launches):
    got = []
    route_dependent_launches(lambda *a: got.append(a))
    launch = dl.DependentLaunch(0xABC, (8, 32), (256,), 1024, "combine")
    launch.launch(0x77, 0x1000)
    launch.launch(0x88, 0x2000)          # another stream: its own config, the first one's is unchanged
    launch.launch(0x77, 0x3000)
    assert got == [(0xABC, 8, 32, 1, 256, 1, 1, 1024, s, p, 0)
                   for s, p in ((0x77, 0x1000), (0x88, 0x2000), (0x77, 0x3000))]


def test_streams_remembered_are_bounded(route_dependent_launches):
    got = []
    route_dependent_launches(lambda *a: got.append(a[8]))
    launch = dl.DependentLaunch(1, (1,), (32,), 0, "k")
    streams = list(range(1, 3 * dl._MAX_STREAMS))
    for s in streams:
        launch.launch(s, 0)
    assert got == streams and len(launch._configs) <= dl._MAX_STREAMS


def test_without_cuLaunchKernelEx_the_launch_is_plain(monkeypatch):
    """FLASHMLA_RT_PDL=0 (or a driver without the entry point): cuLaunchKernel with the same arguments."""
    got = []
    monkeypatch.setattr(dl, "_driver_launch", None)
    monkeypatch.setenv("FLASHMLA_RT_PDL", "0")
    monkeypatch.setattr(dl, "_plain_launch", lambda *a: got.append(a))
    dl.DependentLaunch(5, (3, 2, 4), (256,), 0, "combine").launch(9, 0x500)
    assert dl._driver_launch is False
    assert got == [(5, 3, 2, 4, 256, 1, 1, 0, 9, 0x500, 0)]


def test_a_launch_that_is_not_programmatic_is_plain(route_dependent_launches, monkeypatch):
    """The wide combine: cuLaunchKernel even where cuLaunchKernelEx exists."""
    plain = []
    route_dependent_launches(lambda *a: pytest.fail("launched as a programmatic dependent"))
    monkeypatch.setattr(dl, "_plain_launch", lambda *a: plain.append(a))
    dl.DependentLaunch(5, (1, 128, 4), (256,), 0, "combine", programmatic=False).launch(3, 0x40)
    assert plain == [(5, 1, 128, 4, 256, 1, 1, 0, 3, 0x40, 0)]


def test_a_failed_launch_raises_with_the_kernel_and_the_driver_error(monkeypatch):
    monkeypatch.setattr(dl, "_driver_launch", lambda *a: 1)

    def error_name(status, out):
        ctypes.cast(out, ctypes.POINTER(ctypes.c_char_p))[0] = b"CUDA_ERROR_INVALID_VALUE"
        return 0
    monkeypatch.setattr(dl, "_error_name", error_name)
    with pytest.raises(RuntimeError, match=r"cuLaunchKernelEx\(combine\) failed: CUDA_ERROR_INVALID_VALUE \(1\)"):
        dl.DependentLaunch(5, (1,), (256,), 0, "combine").launch(0, 0)
    monkeypatch.setattr(dl, "_error_name", None)
    with pytest.raises(RuntimeError, match=r"failed: CUresult 700"):
        monkeypatch.setattr(dl, "_driver_launch", lambda *a: 700)
        dl.DependentLaunch(5, (1,), (256,), 0, "combine").launch(0, 0)
