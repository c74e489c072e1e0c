"""Sockets made in the data plane's network namespace.

The responder serves the N6 side, which lives in ``dataplane.netns`` when the
daemon runs elsewhere. A socket belongs for life to the namespace it was
created in, whichever thread later binds, connects or reads it, so only
creation has to happen there. It happens on one thread that entered the
namespace once, at its start (setns(2) moves the calling thread only); the
event loop's thread never changes namespace, and nothing here uses
pyroute2's pushns/popns, whose saved-namespace stack is process-wide and
shared with the engine's worker threads.
"""
from __future__ import annotations

import asyncio
import socket
from concurrent.futures import BrokenExecutor, ThreadPoolExecutor
from typing import Optional

from pyroute2 import netns as pyroute2_netns

__all__ = ["SocketMaker"]


def _enter(name: str) -> None:
    pyroute2_netns.setns(name, flags=0)  # flags=0: the namespace must exist, never create it


class SocketMaker:
    """Creates non-blocking sockets in ``netns`` (None: the daemon's own namespace)."""

    def __init__(self, netns: Optional[str]) -> None:
        self.netns = netns
        self._thread = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="mep-dns-netns", initializer=_enter, initargs=(netns,))
            if netns is not None else None
        )

    async def socket(self, family: socket.AddressFamily, kind: socket.SocketKind) -> socket.socket:
        """A new non-blocking socket of ``family`` and ``kind``; OSError if the namespace cannot be entered."""
        if self._thread is None:
            sock = socket.socket(family, kind)
        else:
            try:
                sock = await asyncio.get_running_loop().run_in_executor(self._thread, socket.socket, family, kind)
            except BrokenExecutor:
                raise OSError(f"cannot enter network namespace {self.netns} (dataplane.netns)") from None
        sock.setblocking(False)
        return sock

    def close(self) -> None:
        """Stop the namespace thread."""
        if self._thread is not None:
            self._thread.shutdown(wait=False, cancel_futures=True)
