"""A small TTL-honouring cache of the upstream's answers.

What is kept: NOERROR and NXDOMAIN answers that are not truncated and whose
records walk cleanly, under the key (name lower case, type, class, RD and CD,
EDNS present, DO). Lifetime: the smallest TTL of the records (the OPT record
aside); for a negative answer (NXDOMAIN, or NOERROR without answers) the
SOA in the authority section gives it, as min(SOA TTL, SOA MINIMUM) (RFC 2308
section 5); a negative answer without an SOA, or a TTL of 0, is not kept.
Never longer than ``dns.cache_max_ttl_s``.

A hit is the stored answer with the asker's ID and question (its 0x20 case),
and every TTL lowered by the whole seconds it has been kept. Least recently
used entries go first when ``dns.cache_entries`` are held.
"""
from __future__ import annotations

import struct
import time
from collections import OrderedDict
from dataclasses import dataclass

from .wire import HEADER_BYTES, RCODE_MASK, TYPE_OPT, TYPE_SOA, COPIED_FLAGS, Flag, Query, Rcode, walk_records

__all__ = ["ResponseCache"]

_Key = tuple[bytes, int, int, int, bool, bool]
_SOA_FIXED_BYTES = 20  # serial, refresh, retry, expire, minimum after the two names
_MAX_TTL = 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class _Entry:
    message: bytes
    ttl_offsets: tuple[int, ...]
    ttls: tuple[int, ...]
    stored: float  # time.monotonic()
    expires: float


def _key(query: Query) -> _Key:
    edns = query.edns
    return (query.qname, query.qtype, query.qclass, query.flags & COPIED_FLAGS, edns is not None,
            edns is not None and edns.do)


class ResponseCache:
    """Up to ``entries`` answers, each for at most ``max_ttl_s`` seconds."""

    def __init__(self, entries: int, max_ttl_s: int) -> None:
        self._max_entries = entries
        self._max_ttl_s = max_ttl_s
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, query: Query) -> bytes | None:
        """The cached answer to ``query`` as it should be sent, or None."""
        key = _key(query)
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = time.monotonic()
        if now >= entry.expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        elapsed = int(now - entry.stored)
        out = bytearray(entry.message)
        out[0:2] = query.id.to_bytes(2, "big")
        out[HEADER_BYTES:query.question_end] = query.question
        for offset, ttl in zip(entry.ttl_offsets, entry.ttls):
            struct.pack_into("!I", out, offset, max(ttl - elapsed, 0))
        return bytes(out)

    def put(self, query: Query, response: bytes) -> bool:
        """Keep the upstream's ``response`` to ``query`` if it may be kept (module docstring); kept or not."""
        if self._max_entries == 0:
            return False
        flags, _, ancount, nscount, arcount = struct.unpack_from("!HHHHH", response, 2)
        rcode = flags & RCODE_MASK
        if flags & Flag.TC or rcode not in (Rcode.NOERROR, Rcode.NXDOMAIN):
            return False
        walked = walk_records(response, query.question_end, ancount + nscount + arcount)
        if walked is None or walked[1] != len(response):
            return False
        records = [r for r in walked[0] if r.rtype != TYPE_OPT]
        if rcode == Rcode.NXDOMAIN or ancount == 0:
            soa = [r for r in walked[0][ancount:ancount + nscount] if r.rtype == TYPE_SOA and r.rdlength > _SOA_FIXED_BYTES]
            if not soa:
                return False
            minimum = struct.unpack_from("!I", response, soa[0].rdata_offset + soa[0].rdlength - 4)[0]
            ttls = [soa[0].ttl, minimum]
        else:
            ttls = [r.ttl for r in records]
        # RFC 2181 section 8: a TTL with the top bit set counts as 0.
        ttl = min(min(t if t <= _MAX_TTL else 0 for t in ttls), self._max_ttl_s)
        if ttl <= 0:
            return False
        now = time.monotonic()
        key = _key(query)
        self._entries[key] = _Entry(response, tuple(r.ttl_offset for r in records), tuple(r.ttl for r in records),
                                    now, now + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return True
