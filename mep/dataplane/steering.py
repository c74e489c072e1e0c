"""Give a user-space engine a port's received frames, and let it hand frames back to the kernel stack.

The fastpath engine reads every frame of its ports from AF_PACKET receive
rings (a tap: the kernel still delivers each frame to its stack afterwards).
``PortSteering`` makes the engine the only one acting on them, and gives it
a way to pass a frame on as if the kernel had received it (XDP_PASS):

- **ingress**: an nftables ``netdev`` table with one ``ingress`` chain per
  port (priority -500, policy drop). AF_PACKET taps run before that hook in
  ``__netif_receive_skb_core``, so the engine still sees every frame, and the
  kernel stack sees none, except those the engine passed back: frames that
  carry ``MARK`` (the chain's first rule drops every other frame: one
  comparison for the frames the engine owns). Those are accepted with the mark cleared and ``pkttype``
  set from the destination MAC exactly as ``eth_type_trans`` would (host,
  broadcast, multicast, otherhost), so the stack drops what it would have
  dropped and forwards what it would have forwarded.
- **the way back**: the engine sends a passed frame out of the port itself
  on an AF_PACKET socket with ``SO_MARK = MARK``; a classic-BPF tc filter on
  the port's clsact egress matches the mark and ``mirred`` redirects the
  frame into the same port's ingress. It then meets the engine's receive
  socket (whose socket filter skips marked frames) and the chain above.

No eBPF is involved: classic BPF (socket filter, cls_bpf with classic ops),
nftables and mirred need CAP_NET_ADMIN/CAP_NET_RAW, not CAP_BPF, so this
works where XDP cannot attach. Limits are in docs/fastpath.md: the mark
value is reserved on these ports, a passed frame crosses the port's egress
path once more (its tx counters count it), and while no engine runs the
table is absent (removed by ``remove``: the kernel forwards everything) or,
after a crash, left in place (the kernel drops everything until the next
engine replaces it).

nftables is driven through libnftables (ctypes), tc filters through
rtnetlink directly: pyroute2 cannot send classic-BPF filter programs.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Optional

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import AttachError
from . import links

__all__ = ["MARK", "TC_PRIO", "SteeredPort", "PortSteering", "nft_table_name"]

# The fwmark of frames the engine passes to the stack ("mep" + 0x01). Reserved on the engine's ports.
MARK = 0x6D657001
# Priority (and handle 1) of the egress filter; other filters on the port keep theirs.
TC_PRIO = 0x4D45

# rtnetlink and tc numbers (linux/rtnetlink.h, linux/pkt_cls.h, linux/tc_act/tc_mirred.h).
_RTM_NEWTFILTER, _RTM_DELTFILTER = 44, 45
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_REPLACE, _NLM_F_CREATE = 0x1, 0x4, 0x100, 0x400
_NLMSG_ERROR = 2
_NLA_F_NESTED = 0x8000
_TCA_KIND, _TCA_OPTIONS = 1, 2
_TCA_BPF_ACT, _TCA_BPF_OPS_LEN, _TCA_BPF_OPS, _TCA_BPF_NAME = 1, 4, 5, 7
_TCA_ACT_KIND, _TCA_ACT_OPTIONS = 1, 2
_TCA_MIRRED_PARMS = 2
_TC_ACT_STOLEN = 4
_TCA_INGRESS_REDIR = 3
_TC_H_CLSACT_EGRESS = 0xFFFFFFF3
_ETH_P_ALL = 0x0003
# Classic BPF (linux/filter.h, linux/bpf_common.h).
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_RET_K = 0x20, 0x15, 0x06
_SKF_AD_MARK = -0x1000 + 20


def _classic_program(mark: int) -> bytes:
    """cls_bpf classic program: -1 (match, run the action) when skb->mark == ``mark``, else 0."""
    code = [(_BPF_LD_W_ABS, 0, 0, _SKF_AD_MARK & 0xFFFFFFFF), (_BPF_JEQ_K, 0, 1, mark),
            (_BPF_RET_K, 0, 0, 0xFFFFFFFF), (_BPF_RET_K, 0, 0, 0)]
    return b"".join(struct.pack("=HBBI", *insn) for insn in code)


def _attr(kind: int, payload: bytes, nested: bool = False) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind | (_NLA_F_NESTED if nested else 0)) + payload + bytes(-length % 4)


def _tc_filter_request(msg_type: int, flags: int, ifindex: int, body_attrs: bytes) -> bytes:
    info = (TC_PRIO << 16) | socket.htons(_ETH_P_ALL)
    tcmsg = struct.pack("=BxxxiIII", socket.AF_UNSPEC, ifindex, 1, _TC_H_CLSACT_EGRESS, info)
    body = tcmsg + _attr(_TCA_KIND, b"bpf\0") + body_attrs
    return struct.pack("=IHHII", 16 + len(body), msg_type, _NLM_F_REQUEST | _NLM_F_ACK | flags, 1, 0) + body


def _rtnetlink(request: bytes) -> None:
    """Send one request on a fresh NETLINK_ROUTE socket (in the thread's namespace); raise on a NACK."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as nl:
        nl.bind((0, 0))
        nl.send(request)
        reply = nl.recv(65536)
    offset = 0
    while offset + 16 <= len(reply):
        length, msg_type = struct.unpack_from("=IH", reply, offset)
        if msg_type == _NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", reply, offset + 16)
            if code:
                raise OSError(-code, os.strerror(-code))
            return
        offset += max(16, (length + 3) & ~3)
    raise OSError(errno.EPROTO, "no acknowledgement from rtnetlink")


def _add_mark_redirect(ifindex: int, mark: int) -> None:
    """clsact egress: frames carrying ``mark`` are redirected into this interface's ingress."""
    mirred = struct.pack("=IIiiiiI", 0, 0, _TC_ACT_STOLEN, 0, 0, _TCA_INGRESS_REDIR, ifindex)
    action = _attr(1, _attr(_TCA_ACT_KIND, b"mirred\0")
                   + _attr(_TCA_ACT_OPTIONS, _attr(_TCA_MIRRED_PARMS, mirred), nested=True), nested=True)
    program = _classic_program(mark)
    options = (_attr(_TCA_BPF_ACT, action, nested=True)
               + _attr(_TCA_BPF_OPS_LEN, struct.pack("=H", len(program) // 8))
               + _attr(_TCA_BPF_OPS, program)
               + _attr(_TCA_BPF_NAME, b"mep_fastpath_stack\0"))
    _rtnetlink(_tc_filter_request(_RTM_NEWTFILTER, _NLM_F_CREATE | _NLM_F_REPLACE, ifindex,
                                  _attr(_TCA_OPTIONS, options, nested=True)))


def _delete_mark_redirect(ifindex: int) -> None:
    _rtnetlink(_tc_filter_request(_RTM_DELTFILTER, 0, ifindex, b""))


class _Nft:
    """The few libnftables calls needed to run a ruleset text (libnftables1)."""

    def __init__(self) -> None:
        path = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            raise AttachError(f"the fastpath engine needs libnftables to own its ports ({exc}); "
                              "apt-get install libnftables1 nftables (make setup)") from exc
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self._lib = lib

    def run(self, text: str) -> None:
        ctx = self._lib.nft_ctx_new(0)
        if not ctx:
            raise AttachError("nft_ctx_new failed")
        try:
            self._lib.nft_ctx_buffer_output(ctx)
            self._lib.nft_ctx_buffer_error(ctx)
            if self._lib.nft_run_cmd_from_buffer(ctx, text.encode()) != 0:
                detail = (self._lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace").strip()
                raise AttachError(f"nftables refused the port chains: {detail}")
        finally:
            self._lib.nft_ctx_free(ctx)


def nft_table_name(instance: str) -> str:
    """The netdev table of one MEP instance (instance names are [a-z0-9_-])."""
    return "mep_fastpath_" + instance.replace("-", "_")


@dataclass(frozen=True)
class SteeredPort:
    ifname: str
    ifindex: int
    mac: bytes


def _mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


@dataclass
class PortSteering:
    """The nftables chains and tc filters of one engine's ports; ``install()``, later ``remove()``."""

    instance: str
    ports: list[SteeredPort]
    netns: Optional[str] = None
    mark: int = MARK
    _clsact_created: list[int] = field(default_factory=list)
    installed: bool = False

    @property
    def table(self) -> str:
        return nft_table_name(self.instance)

    def ruleset(self) -> str:
        """The nftables script: (re)create the table with one ingress chain per port, in one transaction."""
        lines = [f"table netdev {self.table} {{ }}", f"delete table netdev {self.table}",
                 f"table netdev {self.table} {{"]
        for port in self.ports:
            lines += [
                f"  chain ingress_{port.ifindex} {{",
                f'    type filter hook ingress device "{port.ifname}" priority -500; policy drop;',
                f"    meta mark != {self.mark:#x} drop",
                f"    ether daddr {_mac_text(port.mac)} meta mark set 0 meta pkttype set host accept",
                "    ether daddr ff:ff:ff:ff:ff:ff meta mark set 0 meta pkttype set broadcast accept",
                "    ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 meta mark set 0 "
                "meta pkttype set multicast accept",
                "    meta mark set 0 meta pkttype set other accept",
                "  }",
            ]
        lines.append("}")
        return "\n".join(lines) + "\n"

    def install(self) -> None:
        """The way back first (tc), then the ingress chains (from then on the engine owns the ports)."""
        nft = _Nft()
        with links.in_netns(self.netns):
            with IPRoute() as ipr:
                for port in self.ports:
                    try:
                        ipr.tc("add", "clsact", port.ifindex)
                        self._clsact_created.append(port.ifindex)
                    except NetlinkError as exc:
                        if exc.code != errno.EEXIST:
                            raise AttachError(f"clsact on {port.ifname}: {exc}") from exc
            for port in self.ports:
                try:
                    _add_mark_redirect(port.ifindex, self.mark)
                except OSError as exc:
                    raise AttachError(f"tc egress filter (classic BPF + mirred) on {port.ifname}: {exc}") from exc
            nft.run(self.ruleset())
        self.installed = True

    def remove(self) -> None:
        """Ingress chains first (the kernel takes the ports back), then the tc filters."""
        with links.in_netns(self.netns):
            _Nft().run(f"table netdev {self.table} {{ }}\ndelete table netdev {self.table}\n")
            for port in self.ports:
                try:
                    _delete_mark_redirect(port.ifindex)
                except OSError as exc:
                    if exc.errno not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
                        raise
            with IPRoute() as ipr:
                for ifindex in self._clsact_created:
                    try:
                        ipr.tc("del", "clsact", ifindex)
                    except NetlinkError:
                        pass  # the interface is gone, or someone removed it already
        self._clsact_created.clear()
        self.installed = False

    def describe(self) -> dict[str, object]:
        return {"nft_table": f"netdev {self.table}", "mark": f"{self.mark:#x}",
                "tc_egress": f"clsact egress prio {TC_PRIO:#x} handle 1: classic BPF (mark) -> mirred ingress"}
