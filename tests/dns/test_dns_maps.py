"""maps/dns.py on the real BPF maps: ebpf/abi.h's structs and ebpf/maps.h's declarations.

The program is consts.h, abi.h and maps.h compiled with the real cflags
(maps/abi.py, which carries ``dns_cflags``), plus a small XDP function that
bumps a counter slot, so that ``read()`` sums what a program wrote. The
structs are also compared with docs/dns-xdp.md's, member by member.
"""
from __future__ import annotations

import ctypes as ct
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Any, Iterator

import pytest

from mep.config import Capacity, DnsConfig
from mep.dataplane.maps.abi import Sizes, cflags
from mep.dataplane.maps.dns import NODATA_SLOT, DnsMaps, entry_capacity
from mep.dataplane.maps.counters import slots_for
from mep.dataplane.testrun import prog_test_run
from mep.dns.table import DNS_NAME_BYTES, AnswerTable, answer_record, wire_name
from mep.errors import CapacityError
from tests.dns.dns_support import dns_rule, ruleset

pytestmark = pytest.mark.needs_bpf

ROOT = Path(__file__).resolve().parents[2]
DNS_NAMES = 8

_BUMP = r"""
/* test only: count one packet and its bytes into the slot named by the frame's first byte */
int bump(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u8 *p = data;
	__u32 slot;
	struct counter_val *c;

	if (data + 14 > end)
		return XDP_PASS;
	slot = p[0];
	c = mep_dns_counters.lookup(&slot);
	if (c) {
		c->packets += 1;
		c->bytes += end - data;
	}
	return XDP_PASS;
}
"""


def program_text() -> str:
    return '#include <uapi/linux/bpf.h>\n#include "consts.h"\n#include "abi.h"\n#include "maps.h"\n' + _BUMP


@pytest.fixture(scope="module")
def bpf() -> Iterator[Any]:
    if os.geteuid() != 0:
        pytest.skip("needs root (BPF)")
    try:
        from bcc import BPF
    except ImportError:
        pytest.skip("bcc (Debian python3-bpfcc) is not importable; run make setup")
    pin_dir = Path("/sys/fs/bpf") / f"mep-test-dns-{os.getpid()}"
    pin_dir.mkdir(parents=True, exist_ok=True)
    capacity = Capacity(rules=64, filters=64, flows=1024, dns_names=DNS_NAMES)
    try:
        program = BPF(text=program_text().encode(), cflags=cflags(Sizes.from_capacity(capacity), pin_dir))
        try:
            yield program
        finally:
            program.cleanup()
    finally:
        shutil.rmtree(pin_dir, ignore_errors=True)


@pytest.fixture
def maps(bpf: Any) -> DnsMaps:
    for name in ("mep_dns", "mep_dns_cfg"):
        bpf[name].clear()
    counters = bpf["mep_dns_counters"]
    for slot in range(DNS_NAMES + 1):
        counters[ct.c_uint32(slot)] = (counters.Leaf * len(counters.getvalue(ct.c_uint32(slot))))()
    return DnsMaps(bpf["mep_dns"], bpf["mep_dns_counters"], bpf["mep_dns_cfg"], DNS_NAMES, contents_known=True)


def entries(bpf: Any) -> dict[tuple[int, int, bytes], tuple[int, int, bytes]]:
    """(half, qtype, name) -> (rule id, counter slot, record), read back from the kernel."""
    out = {}
    for key, leaf in bpf["mep_dns"].items():
        name = bytes(key.qname)
        assert name == name[: name.index(b"\x00") + 1].ljust(DNS_NAME_BYTES, b"\x00")  # zero-padded
        out[(int(key.half), socket.ntohs(key.qtype), name.rstrip(b"\x00") + b"\x00")] = (
            int(leaf.rule_id), int(leaf.counter), bytes(leaf.rr)[: int(leaf.rr_bytes)])
    return out


VIDEO_A = dns_rule(11, "video.example.com", "198.19.1.10", ttl=30)
VIDEO_AAAA = dns_rule(12, "video.example.com", "2001:db8:a1::10", ttl=40)
CACHE_A = dns_rule(13, "cache.example", "198.19.1.11", ttl=20)


def _fields(text: str, struct_name: str) -> list[str]:
    """The member declarations of ``struct struct_name`` in C text, comments and spacing removed."""
    body = re.search(r"struct %s \{(.*?)\};" % struct_name, text, re.S)
    assert body is not None, struct_name
    code = re.sub(r"/\*.*?\*/", "", body.group(1), flags=re.S)
    return [" ".join(d.split()) for d in code.split(";") if d.strip()]


@pytest.mark.parametrize("struct_name", ["dns_key", "dns_val", "dns_cfg"])
def test_documented_structs_are_abi_h(struct_name: str) -> None:
    doc = (ROOT / "docs" / "dns-xdp.md").read_text()
    abi = (ROOT / "mep" / "dataplane" / "ebpf" / "abi.h").read_text()
    assert _fields(doc, struct_name) == _fields(abi, struct_name)


def test_layout_sizes(bpf: Any) -> None:
    table = bpf["mep_dns"]
    assert ct.sizeof(table.Key) == 4 + DNS_NAME_BYTES and ct.sizeof(table.Leaf) == 40
    assert table.max_entries == entry_capacity(DNS_NAMES)
    assert bpf["mep_dns_counters"].max_entries == 1 + slots_for(DNS_NAMES)  # NODATA, then 3 x the names
    assert ct.sizeof(bpf["mep_dns_cfg"].Leaf) == 20


def test_write_puts_each_half_exactly_the_xdp_entries(bpf: Any, maps: DnsMaps) -> None:
    maps.write(0, AnswerTable(ruleset(VIDEO_A, VIDEO_AAAA, CACHE_A).dns_rules))
    got = entries(bpf)
    video, cache = wire_name("video.example.com"), wire_name("cache.example")
    assert set(got) == {(0, 1, video), (0, 28, video), (0, 1, cache), (0, 28, cache)}
    assert got[(0, 1, video)][0] == 11 and got[(0, 1, video)][2] == answer_record(1, VIDEO_A.address, 30)
    assert got[(0, 28, video)][2] == answer_record(28, VIDEO_AAAA.address, 40) and len(got[(0, 28, video)][2]) == 28
    assert got[(0, 28, cache)] == (0, NODATA_SLOT, b"")  # NODATA
    slots = {got[k][1] for k in got if got[k][0]}
    assert len(slots) == 3 and NODATA_SLOT not in slots
    # The other half is written independently; removing a rule removes its entries from that half only.
    maps.write(1, AnswerTable(ruleset(CACHE_A).dns_rules))
    got = entries(bpf)
    assert {k for k in got if k[0] == 1} == {(1, 1, cache), (1, 28, cache)} and len(got) == 6
    assert got[(1, 1, cache)][1] == got[(0, 1, cache)][1]  # the rule keeps its slot across generations
    maps.write(0, AnswerTable(ruleset(CACHE_A).dns_rules))
    assert {k for k in entries(bpf) if k[0] == 0} == {(0, 1, cache), (0, 28, cache)}


def test_unknown_contents_are_rewritten_whole(bpf: Any, maps: DnsMaps) -> None:
    maps.write(0, AnswerTable(ruleset(VIDEO_A, CACHE_A).dns_rules))
    adopted = DnsMaps(bpf["mep_dns"], bpf["mep_dns_counters"], bpf["mep_dns_cfg"], DNS_NAMES, contents_known=False)
    adopted.adopt(0)
    adopted.write(0, AnswerTable(ruleset(CACHE_A).dns_rules))
    got = entries(bpf)
    assert set(got) == {(0, 1, wire_name("cache.example")), (0, 28, wire_name("cache.example"))}


def test_counters_are_summed_and_survive_removal_and_restart(bpf: Any, maps: DnsMaps) -> None:
    maps.write(0, AnswerTable(ruleset(VIDEO_A, CACHE_A).dns_rules))
    slot_of = {rule_id: slot for rule_id, slot, _ in entries(bpf).values() if rule_id}
    fd = bpf.load_func(b"bump", bpf.XDP).fd
    for slot, times in ((slot_of[11], 3), (slot_of[13], 1), (NODATA_SLOT, 2)):
        for _ in range(times):
            prog_test_run(fd, bytes([slot]) + bytes(59))
    hits = maps.read()
    assert hits.answers[11].packets == 3 and hits.answers[11].bytes == 180
    assert hits.answers[13].packets == 1 and hits.nodata.packets == 2
    # A restarted control plane takes the slots over from the half in force.
    adopted = DnsMaps(bpf["mep_dns"], bpf["mep_dns_counters"], bpf["mep_dns_cfg"], DNS_NAMES, contents_known=False)
    adopted.adopt(0)
    assert adopted.read().answers[11].packets == 3
    # Removed: its final totals are kept; its slot is not reused for two generations, then zeroed.
    maps.write(1, AnswerTable(ruleset(CACHE_A).dns_rules))
    assert maps.read().answers[11].packets == 3
    new_rules = [dns_rule(20 + i, f"n{i}.example", "198.19.1.20") for i in range(DNS_NAMES - 1)]
    maps.write(0, AnswerTable(ruleset(CACHE_A, *new_rules[:-1]).dns_rules))
    used = {slot for rule_id, slot, _ in entries(bpf).values() if rule_id}
    assert slot_of[11] not in used
    maps.write(1, AnswerTable(ruleset(CACHE_A, *new_rules).dns_rules))
    reused = {rule_id: slot for (half, _, _), (rule_id, slot, _) in entries(bpf).items() if half == 1 and rule_id}
    assert reused[new_rules[-1].rule_id] == slot_of[11] and maps.read().answers[new_rules[-1].rule_id].packets == 0


def test_more_rules_than_slots_is_a_capacity_error(maps: DnsMaps) -> None:
    rules = [dns_rule(100 + i, f"x{i}.example", "198.19.1.30") for i in range(DNS_NAMES + 1)]
    with pytest.raises(CapacityError, match="dataplane.capacity.dns_names"):
        maps.write(0, AnswerTable(ruleset(*rules).dns_rules))


@pytest.mark.parametrize("listen,enabled,expected", [
    ("198.18.1.2:53", True, (4, bytes([198, 18, 1, 2]), 53)),
    ("[2001:db8::53]:5353", True, (6, socket.inet_pton(socket.AF_INET6, "2001:db8::53"), 5353)),
    ("0.0.0.0:53", True, (0, b"", 0)),  # a wildcard: XDP cannot know which local address
    ("198.18.1.2:0", True, (0, b"", 0)),  # any free port: XDP cannot know which
    ("198.18.1.2:53", False, (0, b"", 0)),  # DNS disabled
])
def test_listen_address_and_off_switch(bpf: Any, maps: DnsMaps, listen: str, enabled: bool,
                                       expected: tuple[int, bytes, int]) -> None:
    on = maps.set_listen(DnsConfig(enabled=enabled, listen=listen))
    leaf = bpf["mep_dns_cfg"][ct.c_uint32(0)]
    family, addr, port = expected
    assert on == bool(family)
    assert int(leaf.family) == family and socket.ntohs(leaf.port) == port
    assert bytes(leaf.addr.b)[: len(addr)] == addr and not any(bytes(leaf.addr.b)[len(addr):])
