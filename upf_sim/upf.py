"""The simulated UPF: ebpf/upf.c on the N3 and N6 ports of a namespace, with its session maps.

``Upf(table, netns=...)`` compiles the program (about 1 s), writes the
sessions, and attaches ``upf_n3`` to the N3 port and ``upf_n6`` to the N6
port (native XDP where the driver has it; ``modes`` says which). Uplink
G-PDUs are decapsulated onto N6 and downlink packets to a UE encapsulated
toward its gNB, both routed by the namespace's FIB (docs/upf_sim.md).
``close()`` (or leaving the ``with`` block) detaches both programs; the
ports are then left without XDP.
"""
from __future__ import annotations

from types import TracebackType
from typing import Any, Optional

from mep.errors import MapWriteError

from .bpf import Program
from .counters import Counters, read_counters
from .reasons import UPF_REASONS
from .sessions import SessionTable

__all__ = ["Upf", "addr_field"]


def addr_field(struct: Any, field: str, packed: bytes) -> Any:
    """A ctypes ``__u8[4]`` holding ``packed`` for ``field`` of bcc struct type ``struct``."""
    return dict(struct._fields_)[field].from_buffer_copy(packed)


class Upf:
    """The UPF user plane of ``table`` in ``netns`` (None: this namespace); see the module docstring."""

    def __init__(self, table: SessionTable, *, netns: Optional[str] = None, n3: str = "n3", n6: str = "n6",
                 xdp_mode: str = "auto") -> None:
        self.table = table
        self.netns = netns
        self.program = Program.compile("upf", netns, sessions=len(table))
        try:
            self._write_sessions()
            self.modes = {
                n3: self.program.attach_xdp(self.program.xdp("upf_n3"), n3, xdp_mode),
                n6: self.program.attach_xdp(self.program.xdp("upf_n6"), n6, xdp_mode),
            }
        except BaseException:
            self.program.close()
            raise

    def _write_sessions(self) -> None:
        cfg = self.program.table("upf_cfg")
        ul, dl = self.program.table("upf_ul"), self.program.table("upf_dl")
        try:
            cfg[cfg.Key(0)] = cfg.Leaf(local_addr=addr_field(cfg.Leaf, "local_addr", self.table.upf.packed))
            for s in self.table.sessions:
                ul[ul.Key(s.teid_ul)] = ul.Leaf(index=s.index, ue_addr=addr_field(ul.Leaf, "ue_addr", s.ue.packed))
                dl[dl.Key(addr=addr_field(dl.Key, "addr", s.ue.packed))] = dl.Leaf(
                    index=s.index, teid=s.teid_dl, gnb_addr=addr_field(dl.Leaf, "gnb_addr", self.table.gnb.packed),
                    qfi=s.qfi)
        except Exception as exc:  # bcc raises bare Exception on a failed update
            raise MapWriteError(f"writing the UPF's sessions failed: {exc}") from None

    def counters(self) -> Counters:
        """Per reason and per session, summed over CPUs."""
        return read_counters(self.program, "upf", len(self.table), UPF_REASONS)

    def close(self) -> None:
        """Detach both programs and unload."""
        self.program.close()

    def __enter__(self) -> "Upf":
        return self

    def __exit__(self, kind: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()
