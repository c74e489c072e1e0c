"""prog_test_run and the probe program against the running kernel (needs root and bcc)."""
from __future__ import annotations

from typing import Iterator

import pytest

from mep.dataplane.testrun import (
    BPF_F_TEST_XDP_LIVE_FRAMES,
    PROBE_ETHERTYPE,
    XDP_PASS,
    XDP_TX,
    ProbeProgram,
    prog_test_run,
)
from mep.errors import DataplaneError

pytestmark = pytest.mark.needs_bpf

DST, SRC = bytes.fromhex("020000000002"), bytes.fromhex("020000000001")


@pytest.fixture(scope="module")
def probe() -> Iterator[ProbeProgram]:
    program = ProbeProgram.load()
    yield program
    program.close()


def frame(ethertype: int, payload: bytes = bytes(46)) -> bytes:
    return DST + SRC + ethertype.to_bytes(2, "big") + payload


def test_probe_frame_is_sent_back_with_macs_swapped(probe: ProbeProgram) -> None:
    result = prog_test_run(probe.fd, frame(PROBE_ETHERTYPE))
    assert result.retval == XDP_TX
    assert result.output == SRC + DST + frame(PROBE_ETHERTYPE)[12:]


def test_other_frames_pass_unchanged(probe: ProbeProgram) -> None:
    ipv4 = frame(0x0800)
    result = prog_test_run(probe.fd, ipv4)
    assert (result.retval, result.output) == (XDP_PASS, ipv4)


def test_ingress_ifindex_context(probe: ProbeProgram) -> None:
    # lo (ifindex 1) exists in every network namespace.
    assert prog_test_run(probe.fd, frame(PROBE_ETHERTYPE), ingress_ifindex=1).retval == XDP_TX


@pytest.mark.parametrize("ingress", [None, 1], ids=["no-context", "ingress-lo"])
def test_live_frames_go_out_and_leave_no_output(probe: ProbeProgram, ingress: int | None) -> None:
    # The kernel refuses an output buffer in live mode, with or without an xdp_md context.
    result = prog_test_run(probe.fd, frame(0x0800), ingress_ifindex=ingress, repeat=8,
                           flags=BPF_F_TEST_XDP_LIVE_FRAMES)
    assert (result.output, result.meta) == (b"", b"")


def test_repeat_reports_a_duration(probe: ProbeProgram) -> None:
    result = prog_test_run(probe.fd, frame(0x0800), repeat=10)
    assert result.retval == XDP_PASS
    assert result.duration_ns > 0


def test_unknown_ingress_ifindex_names_the_errno(probe: ProbeProgram) -> None:
    with pytest.raises(DataplaneError, match="ENODEV"):
        prog_test_run(probe.fd, frame(0x0800), ingress_ifindex=0x7FFFFFFF)


def test_bad_fd_names_the_errno() -> None:
    with pytest.raises(DataplaneError, match="EBADF"):
        prog_test_run(10_000, frame(0x0800))


@pytest.mark.parametrize("length", [0, 13, 9019])
def test_frame_size_is_checked_before_the_kernel(length: int) -> None:
    with pytest.raises(DataplaneError, match="14..9018 bytes"):
        prog_test_run(0, bytes(length))
