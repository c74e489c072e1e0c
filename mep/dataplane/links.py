"""Interfaces, namespaces, TC and neighbours through pyroute2 (no shelling out to ``ip``).

Everything here runs in the caller's network namespace unless wrapped in
``in_netns(name)``, which enters a named namespace for the current thread
and always returns (pyroute2 pushns/popns).
"""
from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import AttachError, DataplaneError

__all__ = [
    "Link",
    "in_netns",
    "link",
    "ensure_veth",
    "delete_link",
    "xdp_attached",
    "attach_tc_ingress",
    "detach_tc_ingress",
    "links_and_neighbours",
    "XDP_MODE_NAMES",
]

# IFLA_XDP_ATTACHED (include/uapi/linux/if_link.h), as a number or as pyroute2's name for it.
XDP_MODE_NAMES: dict[object, str] = {0: "none", 1: "native", 2: "generic", 3: "offload", 4: "multi",
                  "xdp": "native", "xdpdrv": "native", "xdpgeneric": "generic", "xdpoffload": "offload"}


@dataclass(frozen=True)
class Link:
    ifname: str
    ifindex: int
    mac: bytes
    mtu: int


@contextlib.contextmanager
def in_netns(name: Optional[str]) -> Iterator[None]:
    """Run the body inside network namespace ``name`` (None: stay where we are)."""
    if name is None:
        yield
        return
    netns.pushns(name)
    try:
        yield
    finally:
        netns.popns()


def enter_netns(name: Optional[str]) -> None:
    """Move the calling thread into network namespace ``name`` for the rest of its life (None: stay)."""
    if name is not None:
        netns.setns(name, flags=0)


def link(ifname: str) -> Link:
    """ifindex, MAC and MTU of ``ifname``; DataplaneError naming it when absent."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise _absent(ifname)
        msg = ipr.link("get", index=found[0])[0]
    return _link_of(ifname, msg)


def _absent(ifname: str) -> DataplaneError:
    return DataplaneError(f"interface '{ifname}' does not exist in this network namespace", field="dataplane.ports")


def _link_of(ifname: str, msg: Any) -> Link:
    mac = bytes.fromhex((msg.get("IFLA_ADDRESS") or "00:00:00:00:00:00").replace(":", ""))
    return Link(ifname, int(msg["index"]), mac, int(msg.get("IFLA_MTU") or 1500))


def ensure_veth(name: str, peer: str, *, ipv6: bool = True) -> tuple[Link, Link]:
    """The veth pair name<->peer, created if missing, both up. ``ipv6=False``: the kernel sends
    nothing of its own on them (no router solicitations, MLD reports or DAD probes)."""
    with IPRoute() as ipr:
        if not ipr.link_lookup(ifname=name):
            ipr.link("add", ifname=name, kind="veth", peer=peer)
        for ifname in (name, peer):
            if not ipv6:  # /proc/sys/net is the namespace of the thread that opens it
                with open(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "w") as f:
                    f.write("1")
            ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], state="up")
    return link(name), link(peer)


def delete_link(ifname: str) -> None:
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if found:
            ipr.link("del", index=found[0])


def xdp_attached(ifindex: int) -> tuple[str, int]:
    """(mode name, program id) of the XDP program attached to ``ifindex``."""
    with IPRoute() as ipr:
        msg = ipr.link("get", index=ifindex)[0]
    xdp = msg.get("IFLA_XDP")
    if xdp is None:
        return "none", 0
    mode = xdp.get("IFLA_XDP_ATTACHED") or 0
    return XDP_MODE_NAMES.get(mode, str(mode)), int(xdp.get("IFLA_XDP_PROG_ID") or xdp.get("IFLA_XDP_DRV_PROG_ID")
                                                  or xdp.get("IFLA_XDP_SKB_PROG_ID") or 0)


def attach_tc_ingress(ifindex: int, prog_fd: int, name: str) -> None:
    """Attach a SCHED_CLS program at clsact ingress (direct action), replacing ours."""
    with IPRoute() as ipr:
        try:
            ipr.tc("add", "clsact", ifindex)
        except NetlinkError as exc:
            if exc.code != 17:  # EEXIST: clsact already there
                raise AttachError(f"clsact on ifindex {ifindex}: {exc}") from exc
        try:
            ipr.tc("del-filter", "bpf", ifindex, ":1", parent="ffff:fff2")
        except NetlinkError:
            pass  # none yet
        try:
            ipr.tc("add-filter", "bpf", ifindex, ":1", fd=prog_fd, name=name, parent="ffff:fff2",
                   classid=1, direct_action=True)
        except NetlinkError as exc:
            raise AttachError(f"TC ingress filter on ifindex {ifindex}: {exc}") from exc


def detach_tc_ingress(ifindex: int) -> None:
    with IPRoute() as ipr:
        try:
            ipr.tc("del", "clsact", ifindex)
        except NetlinkError:
            pass  # nothing attached


def links_and_neighbours(ifnames: Sequence[str]) -> tuple[list[Link], dict[int, dict[str, bytes]]]:
    """Each of ``ifnames`` (DataplaneError naming the first absent), and per ifindex the kernel's
    neighbour entries that have a MAC (IP -> MAC): one netlink socket, one dump of each table."""
    with IPRoute() as ipr:
        by_name = {msg.get("IFLA_IFNAME"): msg for msg in ipr.get_links()}
        dumped = ipr.get_neighbours()
    found = []
    for ifname in ifnames:
        msg = by_name.get(ifname)
        if msg is None:
            raise _absent(ifname)
        found.append(_link_of(ifname, msg))
    table: dict[int, dict[str, bytes]] = {}
    for msg in dumped:
        ip, mac = msg.get("NDA_DST"), msg.get("NDA_LLADDR")
        if ip and mac:
            table.setdefault(msg["ifindex"], {})[str(ipaddress.ip_address(ip))] = bytes.fromhex(mac.replace(":", ""))
    return found, table
