"""xsk.py's assembled redirect program, run by the kernel (BPF_PROG_TEST_RUN; needs root).

Empty map: every frame passes to the stack. With an AF_XDP socket bound to
queue 0 in the map: every frame of queue 0 is redirected. A map update with
anything but such a socket is refused with the kernel's reason.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from pyroute2 import netns

from mep.dataplane.fastpath import extension
from mep.dataplane.links import ensure_veth, in_netns
from mep.dataplane.testrun import XDP_PASS, XDP_REDIRECT, prog_test_run
from mep.dataplane.xsk import XskRedirect
from mep.errors import AttachError

pytestmark = pytest.mark.needs_bpf

FRAME = bytes.fromhex("020000000002" "020000000001" "0800") + bytes(46)


@pytest.fixture()
def veth() -> Iterator[tuple[str, int]]:
    """(namespace, ifindex) of one end of a veth pair in a namespace of its own; removed after."""
    name = f"mep-xsk-{uuid.uuid4().hex[:6]}"
    netns.create(name)
    try:
        with in_netns(name):
            end, _ = ensure_veth("xa", "xb", ipv6=False)
        yield name, end.ifindex
    finally:
        netns.remove(name)


def test_an_empty_map_passes_every_frame() -> None:
    prog = XskRedirect(1)
    try:
        for frame in (FRAME, FRAME[:14]):
            assert prog_test_run(prog.prog_fd, frame).retval == XDP_PASS
    finally:
        prog.close()


def test_a_bound_socket_in_the_map_takes_queue_0(veth: tuple[str, int]) -> None:
    name, ifindex = veth
    io = extension().Io(0)
    prog = XskRedirect(ifindex)
    try:
        with in_netns(name):
            io.open_port(1, ifindex, 1 << 16, 2, 64)
        fd, receives, why = io.xsk(1)
        assert receives, why
        prog.insert(fd)
        assert prog_test_run(prog.prog_fd, FRAME).retval == XDP_REDIRECT
    finally:
        prog.close()
        io.close()


def test_a_map_update_with_another_fd_is_refused() -> None:
    prog = XskRedirect(1)
    r, w = os.pipe()
    try:
        with pytest.raises(AttachError, match="XSKMAP update"):
            prog.insert(r)
    finally:
        os.close(r)
        os.close(w)
        prog.close()
