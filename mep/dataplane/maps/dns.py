"""Owner of mep_dns, mep_dns_counters and mep_dns_cfg: the XDP DNS responder's maps (docs/dns-xdp.md).

- ``mep_dns`` (hash): (half, QTYPE, question name) -> the answer record to
  append, the rule it comes from and its counter slot. Double-buffered like
  the rule-set maps: ``write(half, table)`` makes the half not in force hold
  exactly ``table.xdp_entries()`` (only what changed, when the half's
  contents are known), and the engine's flip of ``mep_state`` puts it in
  force with the rest of the rule set, so a rule set to INACTIVE is not
  answered from the next packet on. Entries come from mep/dns/table.py, the
  same table the user-space responder answers from.
- ``mep_dns_counters`` (per-CPU array): answered queries and their bytes per
  slot. Slot 0 counts every NODATA answer; a rule keeps its slot while it is
  in the map, across generations and restarts (``adopt``), and a freed slot
  is zeroed before reuse and not reused for two generations (the old half
  may point at it until the grace period after the next flip).
- ``mep_dns_cfg`` (array, one entry): the address and port the responder
  answers on (``dns.listen``); family 0 turns the XDP responder off.

Key and leaf types are bcc's Key/Leaf classes of the tables; the question
name's capacity is read from the key type, so the C (MEP_DNS_NAME_BYTES)
decides it.
"""
from __future__ import annotations

import ctypes as ct
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any, Optional

from ...config import DnsConfig
from ...dns.table import DNS_NAME_BYTES, AnswerTable, XdpEntry
from ...dns.twin import PASS_FLAGS
from ...dns.wire import ANSWER_FLAGS, COPIED_FLAGS
from ...errors import MapWriteError
from ..engine import PacketBytes
from .counters import SlotCounters, per_cpu_sum, slots_for

__all__ = ["DnsMaps", "DnsHits", "DNS_RR_BYTES", "NODATA_SLOT", "dns_cflags", "entry_capacity"]

DNS_RR_BYTES = 28  # the largest answer record: an AAAA (pointer, type, class, TTL, rdlength, 16 bytes)
NODATA_SLOT = 0


def entry_capacity(dns_names: int) -> int:
    """mep_dns size: two halves of at most two entries (A, AAAA) per name, one name per rule at most."""
    return 2 * 2 * dns_names


def dns_cflags(dns_names: int) -> list[str]:
    """The -D flags of the DNS responder (to be added to maps/abi.py cflags())."""
    defs = {
        "MEP_DNS_COUNTER_SLOTS": 1 + slots_for(dns_names),  # slot 0 (NODATA), then maps/counters.py's slots
        "MEP_DNS_ENTRIES": entry_capacity(dns_names),
        "MEP_DNS_NAME_BYTES": DNS_NAME_BYTES,
        "MEP_DNS_RR_BYTES": DNS_RR_BYTES,
        "MEP_DNS_ANSWER_FLAGS": f"0x{int(ANSWER_FLAGS):04x}",
        "MEP_DNS_COPIED_FLAGS": f"0x{int(COPIED_FLAGS):04x}",
        "MEP_DNS_PASS_FLAGS": f"0x{PASS_FLAGS:04x}",
    }
    return [f"-D{k}={v}" for k, v in defs.items()]


@dataclass
class DnsHits:
    """What the XDP responder answered: per rule id, and all NODATA answers together."""

    answers: dict[int, PacketBytes] = field(default_factory=dict)
    nodata: PacketBytes = field(default_factory=PacketBytes)


class DnsMaps:
    """The DNS maps of one loaded program; ``answers``, ``counters`` and ``cfg`` are its bcc tables."""

    def __init__(self, answers: Any, counters: Any, cfg: Any, dns_names: int, *, contents_known: bool) -> None:
        self._answers = answers
        self._counters = counters
        self._cfg = cfg
        self._name_bytes = len(answers.Key().qname)
        self._mirror: list[Optional[dict[bytes, bytes]]] = [{}, {}] if contents_known else [None, None]
        self._source: list[Optional[AnswerTable]] = [None, None]  # the table each half was last written from
        self._slots = SlotCounters(counters, 1, dns_names, "dataplane.capacity.dns_names")  # 0 is NODATA

    # -- configuration ----------------------------------------------------------------
    def set_listen(self, dns: DnsConfig) -> bool:
        """Answer queries to ``dns.listen``; off (False) when DNS is disabled, or the address is a
        wildcard or the port 0 (XDP cannot tell which local address or port the server took)."""
        host, _, port_text = dns.listen.rpartition(":")
        addr = ipaddress.ip_address(host.strip("[]"))
        port = int(port_text)
        on = dns.enabled and not addr.is_unspecified and port != 0
        leaf = self._cfg.Leaf()
        if on:
            raw = addr.packed
            ct.memmove(ct.addressof(leaf.addr), raw, len(raw))
            leaf.port = socket.htons(port)
            leaf.family = addr.version
        try:
            self._cfg[ct.c_uint32(0)] = leaf
        except Exception as exc:
            raise MapWriteError(f"mep_dns_cfg: {exc}") from exc
        return on

    # -- rule sets ------------------------------------------------------------------------
    def adopt(self, half: int) -> None:
        """Take over the counter slots of the rules in ``half`` (the one in force after a restart)."""
        self._slots.adopt({int(leaf.rule_id): int(leaf.counter) for key, leaf in self._answers.items()
                           if int(key.half) == half and int(leaf.rule_id)})

    def write(self, half: int, table: AnswerTable) -> None:
        """Make ``half`` hold exactly the XDP entries of ``table``; CapacityError if the slots run out,
        MapWriteError if a write fails (the half's contents are then unknown). Nothing to do when the half
        was last written from this very table (the XDP engine keeps one per tuple of DNS rules)."""
        if self._mirror[half] is not None and self._source[half] is table:
            return
        self._source[half] = None
        entries = table.xdp_entries(self._name_bytes)
        slots = self._slots.assign([e.rule_id for e in entries if e.rule_id])
        wanted: dict[bytes, Any] = {}
        for entry in entries:
            key, leaf = self._encode(half, entry, slots)
            wanted[bytes(key)] = (key, leaf)
        old = self._mirror[half]
        try:
            if old is None:
                stale = [k for k in self._answers.keys() if int(k.half) == half and bytes(k) not in wanted]
            else:
                stale = [self._answers.Key.from_buffer_copy(k) for k in old if k not in wanted]
            for key in stale:
                del self._answers[key]
            new: dict[bytes, bytes] = {}
            for raw_key, (key, leaf) in wanted.items():
                raw_leaf = bytes(leaf)
                new[raw_key] = raw_leaf
                if old is None or old.get(raw_key) != raw_leaf:
                    self._answers[key] = leaf
        except Exception as exc:
            self._mirror[half] = None
            raise MapWriteError(f"mep_dns, half {half}: {exc}") from exc
        self._mirror[half] = new
        self._source[half] = table

    def _encode(self, half: int, entry: XdpEntry, slots: dict[int, int]) -> tuple[Any, Any]:
        key = self._answers.Key()
        key.half = half
        key.qtype = socket.htons(entry.qtype)
        ct.memmove(ct.addressof(key.qname), entry.qname, len(entry.qname))
        leaf = self._answers.Leaf()
        leaf.rule_id = entry.rule_id
        leaf.counter = slots[entry.rule_id] if entry.rule_id else NODATA_SLOT
        leaf.rr_bytes = len(entry.record)
        ct.memmove(ct.addressof(leaf.rr), entry.record, len(entry.record))
        return key, leaf

    def read(self) -> DnsHits:
        """Answers per rule (those removed keep their final totals) and NODATA answers, summed over CPUs."""
        return DnsHits(answers=self._slots.read(), nodata=per_cpu_sum(self._counters, NODATA_SLOT))
