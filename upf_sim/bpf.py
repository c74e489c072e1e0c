"""Loading, attaching and reading the simulator's BPF programs (upf_sim/ebpf/), with bcc.

The only module of upf_sim that imports bcc (on first load, so the rest
imports without it). Programs are compiled from ``ebpf/<name>.c`` with the
headers beside it and ``-DSIM_MAX_SESSIONS`` (and any other size a program takes); map key and value types come
from bcc's table classes, built from ``ebpf/abi.h``: Python keeps no mirror.

- ``Program``: one compiled source; ``xdp(fn)``/``tc(fn)`` load an entry,
  ``attach_xdp`` (native first, generic as the fallback; the mode used is
  returned and reported by callers) and ``attach_tc_egress`` attach it to an
  interface of a network namespace; ``close()`` detaches everything this
  object attached and unloads.
- ``Count`` and ``percpu_counts``: per-CPU counters summed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from mep.dataplane.links import in_netns, link
from mep.dataplane.testrun import XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE
from mep.errors import AttachError, LoadError


__all__ = ["EBPF_DIR", "Program", "Count", "percpu_counts", "XDP_MODES"]

EBPF_DIR = Path(__file__).resolve().parent / "ebpf"
XDP_MODES = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}
_TC_EGRESS = "ffff:fff3"  # the clsact qdisc's egress hook
_EEXIST = 17


@dataclass(frozen=True)
class Count:
    """Packets and bytes (bytes: of the user packet, see ebpf/abi.h)."""

    packets: int = 0
    bytes: int = 0

    def __add__(self, other: "Count") -> "Count":
        return Count(self.packets + other.packets, self.bytes + other.bytes)


@dataclass
class Program:
    """One compiled ``ebpf/<name>.c``; see the module docstring."""

    name: str
    bpf: Any
    netns: Optional[str]
    _xdp: list[tuple[str, int]] = field(default_factory=list)  # (ifname, flags) attached by us
    _tc: list[str] = field(default_factory=list)  # ifnames with our clsact qdisc

    @classmethod
    def compile(cls, name: str, netns: Optional[str], *, sessions: int,
                defines: Optional[dict[str, int]] = None) -> "Program":
        """Compile ``ebpf/<name>.c`` for programs that will run in ``netns``; LoadError with bcc's message.

        ``sessions`` sizes the session maps (SIM_MAX_SESSIONS: the table's
        length); ``defines`` are further ``-D`` sizes (the generator's).
        """
        try:
            from bcc import BPF
        except ImportError as exc:
            raise LoadError(f"cannot import bcc ({exc}); fix: apt-get install python3-bpfcc") from None
        source = EBPF_DIR / f"{name}.c"
        try:
            cflags = [f"-I{EBPF_DIR}", f"-DSIM_MAX_SESSIONS={sessions}",
                      *(f"-D{key}={value}" for key, value in (defines or {}).items())]
            bpf = BPF(src_file=str(source).encode(), cflags=cflags)
        except Exception as exc:  # bcc raises bare Exception for compile errors
            raise LoadError(f"{source} did not compile: {exc}") from None
        return cls(name, bpf, netns)

    def _load(self, fn: str, kind: str) -> Any:
        from bcc import BPF

        try:
            return self.bpf.load_func(fn.encode(), getattr(BPF, kind))
        except Exception as exc:  # bcc raises bare Exception with the verifier log
            raise LoadError(f"{self.name}.c {fn}() was refused by the verifier: {exc}") from None

    def xdp(self, fn: str) -> Any:
        """Load entry ``fn`` as an XDP program."""
        return self._load(fn, "XDP")

    def tc(self, fn: str) -> Any:
        """Load entry ``fn`` as a TC classifier (direct action)."""
        return self._load(fn, "SCHED_CLS")

    def table(self, name: str) -> Any:
        """The bcc table (map) ``name``."""
        return self.bpf[name.encode()]

    def attach_xdp(self, fn: Any, ifname: str, mode: str = "auto") -> str:
        """Attach XDP program ``fn`` to ``ifname``, replacing any; returns "native" or "generic".

        ``mode`` "auto" tries native, then generic; AttachError names each
        mode tried and the kernel's answer.
        """
        tries = ["native", "generic"] if mode == "auto" else [mode]
        errors = []
        with in_netns(self.netns):
            for name in tries:
                try:
                    self.bpf.attach_xdp(ifname.encode(), fn, XDP_MODES[name])
                except Exception as exc:  # bcc raises bare Exception with the netlink text
                    errors.append(f"{name}: {exc}")
                    continue
                self._xdp.append((ifname, XDP_MODES[name]))
                return name
        raise AttachError(f"XDP {fn.name.decode()} on {ifname} in {self.netns or 'this namespace'}: "
                          + "; ".join(errors))

    def attach_tc_egress(self, fn: Any, ifname: str) -> None:
        """Attach TC classifier ``fn`` at ``ifname``'s clsact egress (direct action)."""
        with in_netns(self.netns), IPRoute() as ipr:
            index = link(ifname).ifindex
            try:
                ipr.tc("add", "clsact", index)
            except NetlinkError as exc:
                if exc.code != _EEXIST:
                    raise AttachError(f"clsact on {ifname}: {exc}") from None
            self._tc.append(ifname)
            try:
                ipr.tc("add-filter", "bpf", index, ":1", fd=fn.fd, name=fn.name.decode(), parent=_TC_EGRESS,
                       classid=1, direct_action=True)
            except NetlinkError as exc:
                raise AttachError(f"TC egress filter on {ifname}: {exc}") from None

    def close(self) -> None:
        """Detach what this object attached (interfaces already gone are skipped) and unload."""
        from bcc import BPF

        if self.netns is not None and self.netns not in netns.listnetns():
            self._xdp.clear()  # the namespace, and everything attached in it, is gone
            self._tc.clear()
        with in_netns(self.netns if self._xdp or self._tc else None):
            for ifname, flags in reversed(self._xdp):
                try:
                    BPF.remove_xdp(ifname.encode(), flags)
                except Exception:  # the interface (or its namespace) is already gone: nothing attached
                    pass
            with IPRoute() as ipr:
                for ifname in self._tc:
                    found = ipr.link_lookup(ifname=ifname)
                    if found:
                        try:
                            ipr.tc("del", "clsact", found[0])
                        except NetlinkError:
                            pass  # removed by someone else: nothing left to detach
        self._xdp.clear()
        self._tc.clear()
        self.bpf.cleanup()


def percpu_counts(table: Any, count: int, read: Callable[[Any], tuple[Count, ...]]) -> list[tuple[Count, ...]]:
    """Entries 0..count-1 of per-CPU array ``table``, each summed over CPUs.

    ``read`` turns one CPU's value into a tuple of Counts; the tuples are
    added field by field. The array is read with one batch lookup (an array
    map always holds every index).
    """
    values: dict[int, Any] = {}
    for key, value in table.items_lookup_batch():
        if int(key) < count:  # bcc yields array keys as ints
            values[int(key)] = value
    out: list[tuple[Count, ...]] = []
    for index in range(count):
        parts = [read(cpu_value) for cpu_value in values[index]]
        out.append(tuple(sum((p[i] for p in parts), Count()) for i in range(len(parts[0]))))
    return out
