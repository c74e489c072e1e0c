"""The XDP DNS responder in Python: which queries it answers and the exact bytes it answers with.

The executable form of docs/dns-xdp.md, the way reference.py is the
executable form of the traffic-rule semantics: the differential tests hold
the XDP program to it (test-run output payload == ``XdpTwin.answer``), and
tests/dns hold the user-space responder to it (for every query the twin
answers, the server answers with the same bytes).

The twin reads the UDP payload only. The checks before it (an untunnelled
IPv4 or IPv6 UDP datagram, not a fragment, addressed to the responder's
address and port) and the IP/UDP headers of the answer are the XDP
program's, listed in docs/dns-xdp.md.
"""
from __future__ import annotations

import struct
from typing import Iterable

from .table import DNS_NAME_BYTES, XdpEntry
from .wire import ANSWER_FLAGS, CLASS_IN, COPIED_FLAGS, HEADER_BYTES, MAX_LABEL_BYTES, TYPE_A, TYPE_AAAA, header

__all__ = ["XdpTwin", "PASS_FLAGS"]

# A query whose flags have any of these bits goes to user space: QR (a
# response), OPCODE (not QUERY), AA and TC (never set in a query a stub sends).
PASS_FLAGS = 0xFE00


class XdpTwin:
    """Answers a UDP payload from XDP entries, or says it goes to user space (None)."""

    def __init__(self, entries: Iterable[XdpEntry], name_bytes: int = DNS_NAME_BYTES) -> None:
        self._entries = {(e.qname, e.qtype): e for e in entries}
        self._name_bytes = name_bytes

    def lookup(self, payload: bytes) -> XdpEntry | None:
        """The entry answering ``payload``, None if the XDP path leaves it to user space.

        In order: 12-byte header; no PASS_FLAGS; counts 1, 0, 0, 0 (an EDNS
        OPT record makes ARCOUNT 1); a name of labels of 1..63 bytes (no
        compression pointer, no reserved label type) ending in the root label
        within ``name_bytes`` bytes; then exactly QTYPE and QCLASS, nothing
        after; QCLASS IN; QTYPE A or AAAA; the key (name with A-Z folded to
        a-z, QTYPE) in the map.
        """
        if len(payload) < HEADER_BYTES:
            return None
        _, flags, qdcount, ancount, nscount, arcount = struct.unpack_from("!HHHHHH", payload)
        if flags & PASS_FLAGS or (qdcount, ancount, nscount, arcount) != (1, 0, 0, 0):
            return None
        offset = HEADER_BYTES
        limit = min(len(payload), HEADER_BYTES + self._name_bytes)
        while True:
            if offset >= limit:
                return None
            length = payload[offset]
            if length == 0:
                break
            if length > MAX_LABEL_BYTES:
                return None
            offset += 1 + length
        name_end = offset + 1
        if len(payload) != name_end + 4:
            return None
        qtype, qclass = struct.unpack_from("!HH", payload, name_end)
        if qclass != CLASS_IN or qtype not in (TYPE_A, TYPE_AAAA):
            return None
        return self._entries.get((payload[HEADER_BYTES:name_end].lower(), qtype))

    def answer(self, payload: bytes) -> bytes | None:
        """The answer the XDP path sends for ``payload``, None if it passes it to user space.

        The query's ID; flags ANSWER_FLAGS plus its RD and CD; counts 1, 1 (0 for
        NODATA), 0, 0; the question exactly as asked; the entry's record.
        """
        entry = self.lookup(payload)
        if entry is None:
            return None
        msg_id, flags = struct.unpack_from("!HH", payload)
        ancount = 1 if entry.record else 0
        return header(msg_id, ANSWER_FLAGS | (flags & COPIED_FLAGS), 1, ancount, 0, 0) + payload[HEADER_BYTES:] + entry.record
