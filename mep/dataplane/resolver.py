"""Resolve destinations from the live system: ports' MAC and MTU, neighbour tables.

``netlink_resolver(config)`` reads every configured port's interface (MAC
and MTU unless pinned in the configuration) and its neighbour entries, adds
the configured static neighbours, and returns a StaticResolver snapshot for
one compilation. Call it again for the next compilation to see changes.

``LiveResolver`` keeps that snapshot until the kernel announces a change: a
netlink socket in the ports' namespace, joined to the link and neighbour
multicast groups, hears every RTM_NEWLINK/DELLINK/NEWNEIGH/DELNEIGH; a
snapshot is reused while none arrived since it was read (and read again
after one, or after the socket overflowed and events may be lost). So a
compilation right after another pays no netlink dumps, and ``cached()``
answers without blocking, on the event loop.
"""
from __future__ import annotations

import socket
import threading
from typing import Optional

from ..config import DataplaneConfig
from .compiler import StaticResolver, ip_of, mac_bytes
from .links import in_netns, links_and_neighbours
from .ruleset import IpAddr, Port

__all__ = ["netlink_resolver", "LiveResolver"]

# rtnetlink multicast groups (include/uapi/linux/rtnetlink.h, the legacy bind() mask).
_RTMGRP_LINK = 0x1
_RTMGRP_NEIGH = 0x4


def netlink_resolver(config: DataplaneConfig, netns: Optional[str] = None) -> StaticResolver:
    ports: list[Port] = []
    table: dict[IpAddr, tuple[int, bytes]] = {}
    with in_netns(netns):
        live_links, neighbour_tables = links_and_neighbours([pc.ifname for pc in config.ports])
    for index, (pc, live) in enumerate(zip(config.ports, live_links), start=1):
        mac = mac_bytes(pc.mac) if pc.mac else live.mac
        mtu = pc.mtu if "mtu" in pc.model_fields_set else live.mtu
        ports.append(Port(index, pc.name, pc.ifname, pc.role, mac, mtu))
        for ip, neigh_mac in neighbour_tables.get(live.ifindex, {}).items():
            table[ip_of(ip)] = (index, neigh_mac)
        for ip, mac_text in pc.neighbours.items():
            table[ip_of(ip)] = (index, mac_bytes(mac_text))
    return StaticResolver(ports, table)


class LiveResolver:
    """``netlink_resolver``'s snapshot, kept until the kernel announces a link or neighbour change
    (module docstring). Thread-safe; ``close()`` releases the socket."""

    def __init__(self, config: DataplaneConfig, netns: Optional[str] = None) -> None:
        self._config = config
        self._netns = netns
        self._lock = threading.Lock()
        self._events: Optional[socket.socket] = None  # opened by the first resolution
        self._snapshot: Optional[StaticResolver] = None

    def current(self) -> StaticResolver:
        """The snapshot, read again if something changed since (netlink dumps: not on the event loop)."""
        with self._lock:
            if self._events is None:
                with in_netns(self._netns):
                    events = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK
                                           | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
                events.bind((0, _RTMGRP_LINK | _RTMGRP_NEIGH))  # before reading: no change falls between
                self._events = events
            if self._changed() or self._snapshot is None:
                self._snapshot = netlink_resolver(self._config, self._netns)
            return self._snapshot

    def cached(self) -> Optional[StaticResolver]:
        """The snapshot when nothing changed since it was read; None when it must be read again or
        another thread is reading it. Never blocks."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if self._events is not None and self._changed():
                self._snapshot = None
            return self._snapshot
        finally:
            self._lock.release()

    def _changed(self) -> bool:
        """Drain the socket; True if it held any event (or overflowed: ENOBUFS, events lost)."""
        assert self._events is not None
        changed = False
        while True:
            try:
                self._events.recv(65536)
            except BlockingIOError:
                return changed
            except OSError:  # ENOBUFS: the queue overflowed, some change was missed
                pass
            changed = True

    def close(self) -> None:
        with self._lock:
            if self._events is not None:
                self._events.close()
                self._events = None
            self._snapshot = None
