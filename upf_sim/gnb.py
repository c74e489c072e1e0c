"""The simulated gNB: UEs with real IP stacks behind N3, and ebpf/gnb.c to tunnel them.

``Gnb(table, netns=...)`` compiles the program, writes the UEs, attaches
``gnb_uplink`` at TC egress and ``gnb_n3`` as XDP on the N3 port, and (with
``ue_stack``) gives the namespace every UE address (a /32 on ``lo``) and a
default route to the UPF's N3 address. A socket bound to a UE address is
then that UE: what it sends leaves N3 inside the UE's G-PDU tunnel, what
the UPF sends back arrives on it decapsulated (docs/upf_sim.md).
``close()`` removes the addresses and the route and detaches both programs.
"""
from __future__ import annotations

from types import TracebackType
from typing import Optional

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from mep.dataplane.links import in_netns
from mep.errors import MapWriteError

from .bpf import Program
from .counters import Counters, read_counters
from .reasons import GNB_REASONS
from .sessions import SessionTable
from .upf import addr_field

__all__ = ["Gnb"]

_DEFAULT = "0.0.0.0/0"


class Gnb:
    """The gNB of ``table`` in ``netns`` (None: this namespace); see the module docstring."""

    def __init__(self, table: SessionTable, *, netns: Optional[str] = None, n3: str = "n3", ue_stack: bool = True,
                 xdp_mode: str = "auto") -> None:
        self.table = table
        self.netns = netns
        self.n3 = n3
        self._addresses: list[str] = []
        self._route = False
        self.program = Program.compile("gnb", netns, sessions=len(table))
        try:
            self._write_ues()
            self.mode = self.program.attach_xdp(self.program.xdp("gnb_n3"), n3, xdp_mode)
            self.program.attach_tc_egress(self.program.tc("gnb_uplink"), n3)
            if ue_stack:
                self._add_ue_stack()
        except BaseException:
            self.close()
            raise

    def _write_ues(self) -> None:
        cfg, ues, dl = self.program.table("gnb_cfg"), self.program.table("gnb_ues"), self.program.table("gnb_dl")
        try:
            cfg[cfg.Key(0)] = cfg.Leaf(local_addr=addr_field(cfg.Leaf, "local_addr", self.table.gnb.packed),
                                       peer_addr=addr_field(cfg.Leaf, "peer_addr", self.table.upf.packed))
            for s in self.table.sessions:
                ues[ues.Key(addr=addr_field(ues.Key, "addr", s.ue.packed))] = ues.Leaf(
                    index=s.index, teid=s.teid_ul, ue_addr=addr_field(ues.Leaf, "ue_addr", s.ue.packed), qfi=s.qfi)
                dl[dl.Key(s.teid_dl)] = dl.Leaf(index=s.index, ue_addr=addr_field(dl.Leaf, "ue_addr", s.ue.packed))
        except Exception as exc:  # bcc raises bare Exception on a failed update
            raise MapWriteError(f"writing the gNB's UEs failed: {exc}") from None

    def _add_ue_stack(self) -> None:
        with in_netns(self.netns), IPRoute() as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            for s in self.table.sessions:
                ipr.addr("add", index=lo, address=str(s.ue), prefixlen=32)
                self._addresses.append(str(s.ue))
            ipr.route("replace", dst=_DEFAULT, gateway=str(self.table.upf))
            self._route = True

    def _remove_ue_stack(self) -> None:
        if not (self._addresses or self._route) or (self.netns is not None and self.netns not in netns.listnetns()):
            self._addresses.clear()
            self._route = False
            return
        with in_netns(self.netns), IPRoute() as ipr:
            found = ipr.link_lookup(ifname="lo")
            for address in self._addresses if found else ():
                try:
                    ipr.addr("del", index=found[0], address=address, prefixlen=32)
                except NetlinkError:
                    pass  # already gone
            if self._route:
                try:
                    ipr.route("del", dst=_DEFAULT, gateway=str(self.table.upf))
                except NetlinkError:
                    pass  # already gone
        self._addresses.clear()
        self._route = False

    def counters(self) -> Counters:
        """Per reason and per UE, summed over CPUs."""
        return read_counters(self.program, "gnb", len(self.table), GNB_REASONS)

    def close(self) -> None:
        """Remove the UEs' addresses and route, detach both programs, unload."""
        try:
            self._remove_ue_stack()
        finally:
            self.program.close()

    def __enter__(self) -> "Gnb":
        return self

    def __exit__(self, kind: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()
