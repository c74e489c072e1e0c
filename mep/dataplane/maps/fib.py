"""Owner of mep_fib_gen: when the program's FIB cache (ebpf/fib.h) may answer.

With dataplane.fib_forward the XDP program forwards PASS frames to the next
hop the kernel's FIB names, and keeps each answer in mep_fib_cache (per CPU,
written by the program alone) under the generation in mep_fib_gen. An entry
answers only while that word still holds its generation, so a change of the
kernel's routing state must change the word before the next frame:
``FibGeneration`` listens on an rtnetlink socket in the data plane's
namespace, bound to every group whose notifications can change a lookup's
answer (links and their MTU, addresses, routes, policy rules, neighbours, the
forwarding settings), and bumps the word after each batch it reads. It reads
nothing of the messages: any of them may change an answer, and a lookup
costs less than telling which.

The socket is bound before the first generation is written, so no change
after it goes unheard; one that comes while a lookup is under way leaves an
entry with the generation read before the lookup, which the bump makes
stale. Lost notifications (a full socket buffer: ENOBUFS) bump too. close()
writes 0, which turns the cache off for the program that stays attached; an
entry also expires after MEP_FIB_CACHE_NS (1 s) whatever the word says,
which bounds a stale answer when no control plane runs.
"""
from __future__ import annotations

import ctypes as ct
import errno
import os
import select
import socket
import threading
from typing import Any, Optional

from pyroute2.netlink.rtnl import (RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV4_NETCONF, RTNLGRP_IPV4_ROUTE,
                                   RTNLGRP_IPV4_RULE, RTNLGRP_IPV6_IFADDR, RTNLGRP_IPV6_NETCONF,
                                   RTNLGRP_IPV6_ROUTE, RTNLGRP_IPV6_RULE, RTNLGRP_LINK, RTNLGRP_NEIGH)

from ...log import get_logger
from .. import links

__all__ = ["FibGeneration", "WATCHED_GROUPS"]

log = get_logger(__name__)

# rtnetlink groups whose notifications can change what bpf_fib_lookup answers.
WATCHED_GROUPS = (RTNLGRP_LINK, RTNLGRP_NEIGH, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV4_RULE,
                  RTNLGRP_IPV4_NETCONF, RTNLGRP_IPV6_IFADDR, RTNLGRP_IPV6_ROUTE, RTNLGRP_IPV6_RULE,
                  RTNLGRP_IPV6_NETCONF)
_RCVBUF = 4 << 20  # a burst of route changes (a routing daemon's full table) fits before ENOBUFS


class FibGeneration:
    """Keeps mep_fib_gen in step with the routing state of namespace ``netns`` (None: this one)."""

    def __init__(self, table: Any, netns: Optional[str]) -> None:
        self._table = table
        self._value = 0
        self._lock = threading.Lock()
        with links.in_netns(netns):  # a netlink socket hears the namespace it was made in
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK,
                                       socket.NETLINK_ROUTE)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        self._sock.bind((0, sum(1 << (group - 1) for group in WATCHED_GROUPS)))
        self._wake_r, self._wake_w = os.pipe()
        self.bump()  # after the bind: every change from here on bumps again
        self._thread = threading.Thread(target=self._run, name="mep-fib-watch", daemon=True)
        self._thread.start()

    @property
    def value(self) -> int:
        """The generation the program's cache entries must carry now (0: the cache is off)."""
        return self._value

    def bump(self) -> int:
        """A new generation, the notifications waiting read first: no answer cached before this call
        is used again, whatever changed before it (the kernel queues a change's notification before
        the call that made it returns). Returns the generation."""
        with self._lock:
            self._drain()
            return self._bump_locked()

    def _bump_locked(self) -> int:
        self._value = self._value % 0xFFFF_FFFF + 1  # 1..2^32-1: 0 means off
        self._write(self._value)
        return self._value

    def _drain(self) -> bool:
        """Read every waiting notification; whether there was any (or some were lost)."""
        heard = False
        while True:
            try:
                heard |= bool(self._sock.recv(65536))
            except BlockingIOError:
                return heard
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                log.warning("fib_notifications_lost", detail="socket buffer full; every cached answer dropped")
                heard = True

    def _write(self, value: int) -> None:
        self._table[ct.c_uint32(0)] = ct.c_uint32(value)

    def _run(self) -> None:
        while True:
            ready, _, _ = select.select([self._sock.fileno(), self._wake_r], [], [])
            if self._wake_r in ready:
                return
            with self._lock:  # the read and the bump together: bump() in another thread waits for both
                if self._drain():
                    self._bump_locked()

    def close(self) -> None:
        """Stop listening and turn the cache off (the program may stay attached without a listener)."""
        os.write(self._wake_w, b"x")
        self._thread.join()
        with self._lock:
            self._value = 0
            self._write(0)
        self._sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
