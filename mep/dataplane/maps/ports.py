"""Owner of mep_ports (DEVMAP), mep_port_of and mep_mirrors: the data plane's interfaces.

Filled at every load from the resolved ports (index, ifindex, role, MTU,
whether PASS frames arriving there may be forwarded in XDP: ebpf/fib.h) and
the two mirror veth pairs that carry DUPLICATE_* copies (ebpf/mep_tc.c).
"""
from __future__ import annotations

import ctypes as ct
from dataclasses import dataclass
from typing import Any

from ...errors import DataplaneError
from .abi import MAX_IFINDEX, ROLE_MIRROR

__all__ = ["PortEntry", "PortMaps"]


@dataclass(frozen=True)
class PortEntry:
    index: int  # 1.. (DEVMAP slot)
    ifindex: int
    role: int  # abi.ROLE_CODE value
    mtu: int
    fib_forward: bool = False  # dataplane.fib_forward


class PortMaps:
    def __init__(self, bpf: Any) -> None:
        self._devmap = bpf["mep_ports"]
        self._port_of = bpf["mep_port_of"]
        self._mirrors = bpf["mep_mirrors"]

    def set_ports(self, ports: list[PortEntry]) -> None:
        for p in ports:
            _check_ifindex(p.ifindex)
            self._devmap[ct.c_int(p.index)] = ct.c_int(p.ifindex)
            val = self._port_of.Leaf()
            val.index, val.role, val.mtu, val.fib_forward = p.index, p.role, p.mtu, p.fib_forward
            self._port_of[ct.c_uint32(p.ifindex)] = val

    def remove_port(self, index: int) -> None:
        """Empty a DEVMAP slot (tests use it to exercise a failed redirect)."""
        del self._devmap[ct.c_int(index)]

    def set_mirrors(self, near: list[int], far: list[int]) -> None:
        """Mirror k: TC clones to ifindex near[k]; XDP on far[k] builds target k's copy."""
        for k, (n, f) in enumerate(zip(near, far)):
            _check_ifindex(f)
            self._mirrors[ct.c_uint32(k)] = ct.c_uint32(n)
            val = self._port_of.Leaf()
            val.index, val.role, val.mirror, val.mtu = 0, ROLE_MIRROR, k, 0xFFFF
            self._port_of[ct.c_uint32(f)] = val


def _check_ifindex(ifindex: int) -> None:
    if not 0 < ifindex < MAX_IFINDEX:
        raise DataplaneError(f"ifindex {ifindex} is beyond the data plane's port table ({MAX_IFINDEX}); "
                             "recreate the interface (ifindexes are reused) or restart the namespace")
