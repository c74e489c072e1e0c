"""FastpathEngine: the Cython engine (``_fastpath``) on AF_PACKET rings, where XDP cannot attach.

Same CompiledRuleSet, same classifier tables (``tables.build_tables``), same
verdicts, reasons, rule ids and output bytes as the reference engine
(tests/dataplane proves it frame by frame). All packet work runs in nogil C
in ``_fastpath``; this module turns rule sets into its tables, owns counter
slots, and runs the I/O thread.

I/O (docs/fastpath.md): per port an AF_XDP socket in copy mode that receives
what xsk.py's XDP program hands it (``dataplane.fastpath_receive``) and sends
frames redirected out of the port (an AF_PACKET socket with sendmmsg where
AF_XDP cannot open), a TPACKET_V3 receive ring for what reaches the stack
(every frame, where AF_XDP does not receive) and an AF_PACKET socket for frames
passed to the stack; one thread, in the ports' namespace, serving them in batches. A frame the engine
passes (XDP_PASS in the XDP engine) is sent back into the port's own ingress
through a mark and a tc mirred redirect; an nftables netdev ingress chain
keeps the kernel stack from acting on anything else (steering.py).

Rule-set swaps: ``apply`` builds the new tables beside the running ones and
swaps one pointer under the engine lock, which the I/O thread holds for a
whole batch: a batch runs under one rule set, no frame is lost or mixed.

``FastpathEngine(config, netns=..., io=False)`` opens no port: ``process()``
runs frames through the same C code (tests, benchmarks, ``mep explain``).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..config import Config
from ..errors import AttachError, CapacityError, DataplaneError, RuleProblem
from ..log import get_logger
from . import links
from .engine import Counters, Engine, Output, PacketBytes, Result
from .reasons import REASON_VERDICT, Reason, Verdict
from .ruleset import PORT_STACK, CompiledRuleSet
from .steering import MARK, PortSteering, SteeredPort
from .tables import build_tables
from .xsk import PROG_NAME, XskRedirect, attached_program

if TYPE_CHECKING:
    from . import _fastpath as native

__all__ = ["FastpathEngine", "RX_BLOCK_BYTES", "RX_BLOCKS", "XSK_RX_CHUNKS", "extension"]

log = get_logger(__name__)

# Receive ring per port: a block holds any frame (64 KiB) several times over; 16 MiB in all,
# about 116,000 minimum-size frames (144 bytes each in the ring) or 11,000 of 1,514 bytes: what
# the engine can fall behind by during a burst before the kernel counts rx_dropped.
RX_BLOCK_BYTES = 1 << 18
RX_BLOCKS = 64
# AF_XDP receive chunks per port (2 KiB each, 16 MiB, as the TPACKET ring): frames the engine can fall
# behind by (8 ms at 1 Mpps; with 4,096, stalls of this VM's CPU lost ~0.1 % at 1 Mpps).
XSK_RX_CHUNKS = 8192

_HERE = Path(__file__).resolve().parent


def extension() -> Any:
    """The compiled ``_fastpath`` module; DataplaneError naming ``make setup`` when missing or stale.

    Never a fallback to Python: without the extension this engine does not run.
    """
    try:
        from . import _fastpath
    except ImportError as exc:
        raise DataplaneError(f"the Cython fast path is not built ({exc}); run 'make setup' "
                             "(or: python setup.py build_ext --inplace)", field="dataplane.engine") from exc
    built = Path(_fastpath.__file__)
    sources = [p for p in (_HERE / "_fastpath.pyx", _HERE / "_fastpath.pxd") if p.exists()]
    stale = [p.name for p in sources if p.stat().st_mtime > built.stat().st_mtime]
    if stale:
        raise DataplaneError(f"the Cython fast path {built.name} is older than {', '.join(stale)}; run 'make setup'",
                             field="dataplane.engine")
    current = sorted((f"MEP_{r.name}", int(r), int(REASON_VERDICT[r])) for r in Reason)
    if sorted(_fastpath.reason_table()) != current:
        raise DataplaneError(f"the Cython fast path {built.name} was built with another ebpf/reasons.h; "
                             "run 'make setup'", field="dataplane.engine")
    return _fastpath


class _CounterSlots:
    """Rule id -> counter slot. A rule keeps its slot while it exists; a removed rule's totals are kept.

    Counts are per rule id for the engine's lifetime, as in the reference
    engine: a rule removed and added again continues from its old totals.
    """

    def __init__(self, nslots: int) -> None:
        self.nslots = nslots
        self.slots: dict[int, int] = {}
        self.finals: dict[int, PacketBytes] = {}

    def assign(self, rule_ids: list[int]) -> tuple[dict[int, int], list[int], dict[int, int]]:
        """(slots of the next rule set, new slots to zero first, slots to retire after the swap)."""
        wanted = set(rule_ids)
        retiring = {rid: slot for rid, slot in self.slots.items() if rid not in wanted}
        busy = set(self.slots.values())
        free = (s for s in range(self.nslots) if s not in busy)
        fresh: list[int] = []
        slots = {rid: slot for rid, slot in self.slots.items() if rid in wanted}
        for rid in rule_ids:
            if rid in slots:
                continue
            slot = next(free, None)
            if slot is None:
                raise CapacityError([RuleProblem("*", "*", "dataplane.capacity.rules",
                                                 f"no free counter slot among {self.nslots}")])
            slots[rid] = slot
            fresh.append(slot)
        return slots, fresh, retiring


class FastpathEngine(Engine):
    """See the module docstring. ``fallback_from``: why the configured engine could not run (reported)."""

    name = "fastpath"
    min_frame_bytes = 0

    def __init__(self, config: Config, *, netns: Optional[str] = None, io: bool = True,
                 fallback_from: Optional[str] = None) -> None:
        fp = extension()
        dp = config.dataplane
        self._fp = fp
        self._config = config
        self._netns = netns
        self._fallback_from = fallback_from
        self._ruleset: Optional[CompiledRuleSet] = None
        self._apply_lock = threading.Lock()
        # Slots for one rule set while the previous one still holds its own (see apply()).
        self._slots = _CounterSlots(2 * dp.capacity.rules)
        self._core: native.Core = fp.Core(dp.capacity.flows, self._slots.nslots)
        self._io: Optional[native.Io] = None
        self._thread: Optional[threading.Thread] = None
        self._steering: Optional[PortSteering] = None
        self._port_names: dict[int, str] = {}
        self._xdp_seen: dict[str, str] = {}
        self._receive: dict[str, str] = {}
        self._xsk_progs: list[XskRedirect] = []
        if io:
            self._start_io()

    # -- I/O --------------------------------------------------------------------------------
    def _start_io(self) -> None:
        dp = self._config.dataplane
        if not dp.ports:
            raise DataplaneError("the fastpath engine needs dataplane.ports", field="dataplane.ports")
        io: native.Io = self._fp.Io(MARK)
        self._io = io
        steered = []
        try:
            with links.in_netns(self._netns):
                live = [links.link(pc.ifname) for pc in dp.ports]
                for index, (pc, lk) in enumerate(zip(dp.ports, live), start=1):
                    mode, _, name = attached_program(lk.ifindex)
                    foreign = mode != "none" and name != PROG_NAME  # PROG_NAME's: a crashed engine's, replaced
                    if foreign:
                        # XDP runs before AF_PACKET: frames it does not pass never reach this engine.
                        self._xdp_seen[pc.ifname] = mode
                        log.warning("fastpath_port_has_xdp", ifname=pc.ifname, mode=mode, program=name)
                    why = self._xsk_refusal(lk, f"XDP program {name or '?'} attached ({mode})" if foreign else "")
                    try:
                        io.open_port(index, lk.ifindex, RX_BLOCK_BYTES, RX_BLOCKS, 0 if why else XSK_RX_CHUNKS)
                    except OSError as exc:
                        raise AttachError(f"AF_PACKET sockets on {pc.ifname}: {exc}") from exc
                    self._port_names[index] = pc.name
                    if not why:
                        why = self._receive_xsk(io, index, lk.ifindex)
                    if why and dp.fastpath_receive == "af_xdp":
                        raise AttachError(f"AF_XDP receive on {pc.ifname} (dataplane.fastpath_receive: af_xdp): "
                                          f"{why}")
                    self._receive[pc.name] = f"af_packet ({why})" if why else "af_xdp"
                    steered.append(SteeredPort(pc.ifname, lk.ifindex, lk.mac))
            self._steering = PortSteering(self._config.instance, steered, self._netns)
            self._steering.install()
            self._thread = self._serve(io)
        except BaseException:
            if self._steering is not None and self._steering.installed:
                self._steering.remove()
            self._release_xsk_progs()
            io.close()
            self._io = None
            raise
        log.info("fastpath_started", ports={pc.name: pc.ifname for pc in dp.ports}, receive=self._receive,
                 fallback_from=self._fallback_from)

    def _xsk_refusal(self, lk: links.Link, foreign_program: str) -> str:
        """Why this port does not receive through AF_XDP ('' : it tries); ``foreign_program``: another XDP program."""
        if self._config.dataplane.fastpath_receive == "af_packet":
            return "dataplane.fastpath_receive: af_packet"
        if foreign_program:
            return foreign_program
        if lk.mtu + 18 > self._fp.XSK_RX_MAX_FRAME:  # Ethernet header, one VLAN tag
            return f"MTU {lk.mtu} above the {self._fp.XSK_RX_MAX_FRAME - 18} an AF_XDP chunk holds"
        return ""

    def _receive_xsk(self, io: native.Io, index: int, ifindex: int) -> str:
        """Point xsk.py's program at port ``index``'s socket and attach it; '' or why it could not."""
        fd, receives, why = io.xsk(index)
        if not receives:
            return f"AF_XDP socket: {why}"
        prog: Optional[XskRedirect] = None
        try:
            prog = XskRedirect(ifindex)
            prog.insert(fd)
            prog.attach()
        except DataplaneError as exc:  # AttachError with the kernel's reason, or no libbpf.so.1
            if prog is not None:
                prog.close()
            return str(exc)
        self._xsk_progs.append(prog)
        return ""

    def _release_xsk_progs(self) -> None:
        """Detach the AF_XDP receive programs: the ports' frames go to the stack (and the rings) again."""
        with links.in_netns(self._netns):
            for prog in self._xsk_progs:
                prog.close()
        self._xsk_progs = []

    def _serve(self, io: native.Io) -> threading.Thread:
        """Start the I/O thread in the ports' namespace (it reopens AF_XDP sockets there); once it is in it."""
        entered = threading.Event()
        failed: list[OSError] = []

        def serve() -> None:
            try:
                links.enter_netns(self._netns)
            except OSError as exc:
                failed.append(exc)
                return
            finally:
                entered.set()
            io.run(self._core)

        thread = threading.Thread(target=serve, name="mep-fastpath-io", daemon=True)
        thread.start()
        entered.wait()
        if failed:
            thread.join()
            raise AttachError(f"the I/O thread cannot enter network namespace {self._netns}: {failed[0]}")
        return thread

    # -- Engine ---------------------------------------------------------------------------------
    @property
    def ruleset(self) -> Optional[CompiledRuleSet]:
        return self._ruleset

    def apply(self, ruleset: CompiledRuleSet) -> None:
        """Build the new tables beside the running ones, then swap between two batches."""
        tables = build_tables(ruleset)
        with self._apply_lock:
            slots, fresh, retiring = self._slots.assign([r.rule_id for r in ruleset.rules])
            native = self._fp.RuleTables(tables, ruleset, slots)
            for slot in fresh:
                self._core.zero_slot(slot)
            self._core.swap(native)
            # No batch counts into a retired slot after the swap: keep its totals, free it.
            for (rid, slot), (packets, nbytes) in zip(retiring.items(),
                                                      self._core.slot_totals(list(retiring.values()))):
                final = self._slots.finals.setdefault(rid, PacketBytes())
                final.packets += packets
                final.bytes += nbytes
            self._slots.slots = slots
            self._ruleset = ruleset

    def process(self, frame: bytes, ingress: int = PORT_STACK) -> Result:
        """One frame through the same C code as the I/O loop; counted like traffic, nothing sent."""
        verdict, reason, rule_id, reverse, outputs = self._core.process(frame, ingress)
        return Result(Verdict(verdict), Reason(reason), rule_id,
                      tuple(Output(port, data) for port, data in outputs), reverse)

    def counters(self) -> Counters:
        counters = Counters()
        for reason_number, packets, nbytes in self._core.reason_totals():
            reason = Reason(reason_number)
            counters.reasons[reason] = PacketBytes(packets, nbytes)
            verdict = counters.verdicts[REASON_VERDICT[reason]]
            verdict.packets += packets
            verdict.bytes += nbytes
        with self._apply_lock:  # no slot is retired or reused while it is read
            live = dict(self._slots.slots)
            finals = {rid: PacketBytes(pb.packets, pb.bytes) for rid, pb in self._slots.finals.items()}
            totals = self._core.slot_totals(list(live.values()))
        for rid, (packets, nbytes) in zip(live, totals):
            total = finals.setdefault(rid, PacketBytes())
            total.packets += packets
            total.bytes += nbytes
        for rid, pb in finals.items():
            if pb.packets:
                counters.rules[rid] = pb
        return counters

    def describe(self) -> dict[str, Any]:
        rs = self._ruleset
        out: dict[str, Any] = {
            "engine": self.name,
            "generation": rs.generation if rs else None,
            "rules": len(rs.rules) if rs else 0,
            "flows": self._core.flow_count,
            "flow_capacity": self._core.flow_capacity,
            "io": "none (process() only)" if self._io is None else "rx per port (ports.*.receive), tx per port "
                                                                     "(ports.*.transmit)",
        }
        if self._fallback_from:
            out["fallback_from"] = self._fallback_from
        if self._io is not None:
            out["io_running"] = self._thread is not None and self._thread.is_alive()
            out["io_thread"] = self._thread.native_id if self._thread is not None else None  # for taskset, chrt
            out["ports"] = {name: {"receive": self._receive.get(name, "af_packet"), **self._io.stats(index)}
                            for index, name in self._port_names.items()}
            if self._steering is not None:
                out["stack_path"] = self._steering.describe()
            if self._xdp_seen:
                out["xdp_on_ports"] = dict(self._xdp_seen)
        return out

    def flush_flows(self) -> None:
        """Forget every reverse flow (replies then take the stateless path)."""
        self._core.flush_flows()

    def close(self) -> None:
        """Give the ports back to the kernel, then stop the I/O thread and release the rings.

        Steering goes first: frames arriving meanwhile reach the kernel stack
        (and, until the thread stops, this engine too) rather than nobody.
        """
        if self._io is None:
            return
        try:
            if self._steering is not None:
                self._steering.remove()
            self._release_xsk_progs()
        finally:
            self._io.stop()
            if self._thread is not None:
                self._thread.join()
            self._io.close()
            self._io = None
            log.info("fastpath_stopped")
