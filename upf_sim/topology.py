"""The lab topology of DESIGN.md section 7, built with pyroute2 in network namespaces.

::

    ns ran  --n3--  ns upf  --n6--  ns mep  --dn--  ns dn
    gNB, UEs         UPF            XDP     \\--app1-- ns app1
                                             \\--app2-- ns app2

Every namespace name carries a tag, so several topologies can coexist (two
MEPs in one test, a test beside the demo). Addresses come from
198.18.0.0/15 only; MACs are fixed so frames can be built and checked byte
for byte (tests/packets.py uses the same constants). N3 has an MTU of 1600,
so a full-size (1500-byte) user packet fits in 44 bytes of GTP-U, and both
its ends know each other's MAC (static neighbours). Peers of data-plane
ports get a pass-everything XDP program, because a native XDP redirect into
a veth is dropped unless its peer runs XDP; transmit checksum offload and
segmentation are off on the senders, so XDP sees complete frames. upf_sim
(docs/upf_sim.md) puts its gNB on ran's n3 and its UPF on upf's n3 and n6.

``Topology`` is a context manager: leaving it removes every namespace (and
with it every veth and program attached there), even after an error.
"""
from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass, field
from typing import Any, Sequence

from pyroute2 import IPRoute, netns
from pyroute2.ethtool import Ethtool

from mep.dataplane.links import in_netns

__all__ = ["Topology", "Addresses", "ADDR", "MEP_PORTS"]


@dataclass(frozen=True)
class Addresses:
    ue_pool: str = "198.18.0.0/24"
    ue1: str = "198.18.0.5"
    ue2: str = "198.18.0.6"
    gnb: str = "198.18.200.1"
    upf_n3: str = "198.18.200.2"
    upf_n6: str = "198.18.1.1"
    mep_n6: str = "198.18.1.2"
    mep_dn: str = "198.18.2.1"
    dn_gw: str = "198.18.2.2"
    servers: str = "198.18.100.0/24"
    server: str = "198.18.100.1"
    dn_resolver: str = "198.18.100.53"  # a DNS resolver in the data network
    mep_app1: str = "198.19.1.1"
    app1: str = "198.19.1.10"
    mep_app2: str = "198.19.2.1"
    app2: str = "198.19.2.10"
    tun_peer: str = "198.19.2.20"
    mep_services: str = "198.19.0.1"  # the MEP host's own services (Mp1), reachable from the apps
    # upf_sim's UEs (in ns ran, behind the gNB): 16382 addresses, routed to the UPF by the MEP
    sim_ue_pool: str = "198.18.64.0/18"
    sim_first_ue: str = "198.18.64.1"
    n3_mtu: int = 1600
    # MACs: N3, the MEP's ports and the hosts behind them
    gnb_mac: str = "02:00:00:00:03:01"
    upf_n3_mac: str = "02:00:00:00:03:02"
    upf_n6_mac: str = "02:00:00:00:05:01"
    mep_n6_mac: str = "02:00:00:00:06:01"
    mep_dn_mac: str = "02:00:00:00:0d:01"
    dn_mac: str = "02:00:00:00:0d:02"
    mep_app1_mac: str = "02:00:00:00:a1:01"
    app1_mac: str = "02:00:00:00:a1:02"
    mep_app2_mac: str = "02:00:00:00:a2:01"
    app2_mac: str = "02:00:00:00:a2:02"


ADDR = Addresses()

# dataplane.ports for a MEP running in the topology's mep namespace.
MEP_PORTS: list[dict[str, Any]] = [
    {"name": "n6", "ifname": "n6", "role": "n6"},
    {"name": "dn", "ifname": "dn", "role": "dn"},
    {"name": "app1", "ifname": "app1", "role": "app"},
    {"name": "app2", "ifname": "app2", "role": "app"},
]

_OFFLOADS = ("tx-checksum-ip-generic", "tx-checksum-ipv4", "tx-checksum-ipv6", "tx-checksum-sctp",
             "tx-tcp-segmentation", "tx-tcp6-segmentation", "tx-generic-segmentation", "rx-gro")


@dataclass
class _Link:
    ns_a: str
    if_a: str
    mac_a: str
    addr_a: str
    ns_b: str
    if_b: str
    mac_b: str
    addr_b: str
    mtu: int = 1500


@dataclass
class Topology:
    """Create with ``with Topology() as topo:``; ``topo.ns("mep")`` is the real namespace name."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    peer_xdp: bool = True
    _created: list[str] = field(default_factory=list)
    _probe: Any = None

    def ns(self, role: str) -> str:
        return f"mep-{role}-{self.tag}"

    # -- build ----------------------------------------------------------------------
    def __enter__(self) -> "Topology":
        try:
            self.create()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def create(self) -> None:
        a = ADDR
        for role in ("ran", "upf", "mep", "dn", "app1", "app2"):
            netns.create(self.ns(role))
            self._created.append(self.ns(role))
            self._sysctls(self.ns(role), forward=role in ("ran", "upf", "mep"))
        links = [
            _Link(self.ns("ran"), "n3", a.gnb_mac, f"{a.gnb}/24",
                  self.ns("upf"), "n3", a.upf_n3_mac, f"{a.upf_n3}/24", mtu=a.n3_mtu),
            _Link(self.ns("upf"), "n6", a.upf_n6_mac, f"{a.upf_n6}/24",
                  self.ns("mep"), "n6", a.mep_n6_mac, f"{a.mep_n6}/24"),
            _Link(self.ns("mep"), "dn", a.mep_dn_mac, f"{a.mep_dn}/24",
                  self.ns("dn"), "eth0", a.dn_mac, f"{a.dn_gw}/24"),
            _Link(self.ns("mep"), "app1", a.mep_app1_mac, f"{a.mep_app1}/24",
                  self.ns("app1"), "eth0", a.app1_mac, f"{a.app1}/24"),
            _Link(self.ns("mep"), "app2", a.mep_app2_mac, f"{a.mep_app2}/24",
                  self.ns("app2"), "eth0", a.app2_mac, f"{a.app2}/24"),
        ]
        for link in links:
            self._veth(link)
        # hosts behind the MEP and its neighbours (static: the MEP resolves dstInterface by them)
        self._addr(self.ns("upf"), "lo", [f"{ip}/32" for ip in (a.ue1, a.ue2)])
        self._addr(self.ns("dn"), "lo", [f"{a.server}/32", f"{a.dn_resolver}/32"])
        self._addr(self.ns("mep"), "lo", [f"{a.mep_services}/32"])
        self._addr(self.ns("app2"), "eth0", [f"{a.tun_peer}/24"])
        self._route(self.ns("upf"), "0.0.0.0/0", a.mep_n6)
        self._route(self.ns("mep"), a.ue_pool, a.upf_n6)
        self._route(self.ns("mep"), a.sim_ue_pool, a.upf_n6)
        self._route(self.ns("mep"), a.servers, a.dn_gw)
        self._route(self.ns("dn"), "0.0.0.0/0", a.mep_dn)
        self._route(self.ns("app1"), "0.0.0.0/0", a.mep_app1)
        self._route(self.ns("app2"), "0.0.0.0/0", a.mep_app2)
        for ns, ip, mac, dev in ((self.ns("mep"), a.app1, a.app1_mac, "app1"),
                                 (self.ns("mep"), a.app2, a.app2_mac, "app2"),
                                 (self.ns("mep"), a.tun_peer, a.app2_mac, "app2"),
                                 (self.ns("mep"), a.upf_n6, a.upf_n6_mac, "n6"),
                                 (self.ns("mep"), a.dn_gw, a.dn_mac, "dn"),
                                 (self.ns("upf"), a.mep_n6, a.mep_n6_mac, "n6"),
                                 (self.ns("upf"), a.gnb, a.gnb_mac, "n3"),
                                 (self.ns("ran"), a.upf_n3, a.upf_n3_mac, "n3"),
                                 (self.ns("dn"), a.mep_dn, a.mep_dn_mac, "eth0"),
                                 (self.ns("app1"), a.mep_app1, a.mep_app1_mac, "eth0"),
                                 (self.ns("app2"), a.mep_app2, a.mep_app2_mac, "eth0")):
            self._neighbour(ns, ip, mac, dev)
        if self.peer_xdp:
            self._attach_peer_xdp([(self.ns("upf"), "n6"), (self.ns("dn"), "eth0"),
                                   (self.ns("app1"), "eth0"), (self.ns("app2"), "eth0")])

    def _sysctls(self, ns: str, *, forward: bool) -> None:
        with in_netns(ns):
            for path, value in (("net/ipv4/ip_forward", "1" if forward else "0"), ("net/ipv4/conf/all/rp_filter", "0"),
                                ("net/ipv4/conf/default/rp_filter", "0"), ("net/ipv6/conf/all/disable_ipv6", "0")):
                with open(f"/proc/sys/{path}", "w") as f:
                    f.write(value)
            with IPRoute() as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")

    def _veth(self, link: _Link) -> None:
        with IPRoute() as ipr:
            tmp_a, tmp_b = f"t{uuid.uuid4().hex[:10]}", f"t{uuid.uuid4().hex[:10]}"
            ipr.link("add", ifname=tmp_a, kind="veth", peer=tmp_b)
            ipr.link("set", index=ipr.link_lookup(ifname=tmp_a)[0], net_ns_fd=link.ns_a)
            ipr.link("set", index=ipr.link_lookup(ifname=tmp_b)[0], net_ns_fd=link.ns_b)
        for ns, tmp, name, mac, addr in ((link.ns_a, tmp_a, link.if_a, link.mac_a, link.addr_a),
                                         (link.ns_b, tmp_b, link.if_b, link.mac_b, link.addr_b)):
            with in_netns(ns):
                with IPRoute() as ipr:
                    idx = ipr.link_lookup(ifname=tmp)[0]
                    ipr.link("set", index=idx, ifname=name, address=mac, mtu=link.mtu)
                    ip, plen = addr.split("/")
                    ipr.addr("add", index=idx, address=ip, prefixlen=int(plen))
                    ipr.link("set", index=idx, state="up")
                with open(f"/proc/sys/net/ipv4/conf/{name}/rp_filter", "w") as f:
                    f.write("0")
                _offloads_off(name)

    def _addr(self, ns: str, ifname: str, addrs: Sequence[str]) -> None:
        with in_netns(ns), IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=ifname)[0]
            for addr in addrs:
                ip, plen = addr.split("/")
                ipr.addr("add", index=idx, address=ip, prefixlen=int(plen))

    def _route(self, ns: str, dst: str, gateway: str) -> None:
        with in_netns(ns), IPRoute() as ipr:
            ipr.route("add", dst=dst, gateway=gateway)

    def _neighbour(self, ns: str, ip: str, mac: str, ifname: str) -> None:
        with in_netns(ns), IPRoute() as ipr:
            ipr.neigh("replace", dst=ip, lladdr=mac, ifindex=ipr.link_lookup(ifname=ifname)[0], state="permanent")

    def _attach_peer_xdp(self, where: list[tuple[str, str]]) -> None:
        from mep.dataplane.testrun import XDP_FLAGS_DRV_MODE, ProbeProgram

        self._probe = ProbeProgram.load()
        for ns, ifname in where:
            with in_netns(ns):
                self._probe.attach(ifname, XDP_FLAGS_DRV_MODE)

    # -- use --------------------------------------------------------------------------
    def popen(self, role: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside namespace ``role`` (setns in the child, before exec)."""
        name = self.ns(role)
        return subprocess.Popen(list(argv), preexec_fn=lambda: netns.setns(name), **kw)

    def run(self, role: str, argv: Sequence[str], timeout: float = 30, **kw: Any) -> subprocess.CompletedProcess[Any]:
        name = self.ns(role)
        return subprocess.run(list(argv), preexec_fn=lambda: netns.setns(name), timeout=timeout, **kw)

    def mep_config(self, **dataplane: Any) -> dict[str, Any]:
        """A ``dataplane`` section for a MEP in this topology (ports by name, static neighbours)."""
        return {"ports": MEP_PORTS, **dataplane}

    # -- teardown ---------------------------------------------------------------------
    def destroy(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        for name in reversed(self._created):
            try:
                netns.remove(name)
            except OSError:
                pass  # already gone
        self._created.clear()


def _offloads_off(ifname: str) -> None:
    e = Ethtool()
    try:
        features = e.get_features(ifname)
        for name in _OFFLOADS:
            if name in features.features:
                features.features[name].enable = False
        e.set_features(ifname, features)
    finally:
        e.close()

