"""upf_sim without root: session tables, flow mixes, the frames it builds (scapy, tshark), reasons, CLI."""
from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from scapy.contrib.gtp import GTP_U_Header, GTPPDUSessionContainer
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from mep.errors import ConfigError, InvalidInput
from tests.upf.wire import checksums_valid, tshark_fields
from upf_sim import cli
from upf_sim.reasons import GNB_REASONS, REASON_COUNT, REASONS, UPF_REASONS
from upf_sim.sessions import DEFAULT_QFI, SessionTable
from upf_sim.topology import ADDR
from upf_sim.traffic import FlowMix, g_pdu, user_packet

MACS = {"gnb_mac": bytes.fromhex("020000000301"), "upf_mac": bytes.fromhex("020000000302")}


def test_generated_table_is_consecutive() -> None:
    table = SessionTable.generate(3, first_ue="198.18.64.10", first_teid_ul=0x100, first_teid_dl=0x900, qfi=5)
    assert [(str(s.ue), s.teid_ul, s.teid_dl, s.qfi, s.index) for s in table] == [
        ("198.18.64.10", 0x100, 0x900, 5, 0), ("198.18.64.11", 0x101, 0x901, 5, 1),
        ("198.18.64.12", 0x102, 0x902, 5, 2)]
    assert (str(table.gnb), str(table.upf)) == (ADDR.gnb, ADDR.upf_n3)


def test_yaml_table_singles_then_ranges(tmp_path: Path) -> None:
    path = tmp_path / "sessions.yaml"
    path.write_text("qfi: 7\nsessions:\n  - {ue: 198.18.64.1, teid_ul: 0x10, teid_dl: 0x20, qfi: 1}\n"
                    "ranges:\n  - {first_ue: 198.18.65.1, count: 2, first_teid_ul: 0x100, first_teid_dl: 0x200}\n")
    table = SessionTable.load(path)
    assert [(str(s.ue), s.teid_ul, s.teid_dl, s.qfi) for s in table] == [
        ("198.18.64.1", 0x10, 0x20, 1), ("198.18.65.1", 0x100, 0x200, 7), ("198.18.65.2", 0x101, 0x201, 7)]
    assert table.by_ue("198.18.65.2").index == 2
    assert SessionTable.from_dict(table.to_dict()).sessions == table.sessions


@pytest.mark.parametrize("data, message", [
    ({"sessions": [{"ue": "198.18.64.1", "teid_ul": 0, "teid_dl": 1}]}, "sessions.0.teid_ul"),
    ({"sessions": [{"ue": "198.18.64.1", "teid_ul": 1, "teid_dl": 1}],
      "ranges": [{"first_ue": "198.18.64.1", "count": 1, "first_teid_ul": 2, "first_teid_dl": 2}]},
     "sessions 0 and 1 have the same ue 198.18.64.1"),
    ({"sessions": [{"ue": "198.18.64.1", "teid_ul": 1, "teid_dl": 1}, {"ue": "198.18.64.2", "teid_ul": 1,
                                                                       "teid_dl": 2}]}, "same teid_ul 0x1"),
    ({"sessions": [{"ue": "2001:db8::1", "teid_ul": 1, "teid_dl": 1}]}, "sessions.0.ue"),
    ({"sesions": []}, "sesions: unknown key"),
    ({}, "no sessions"),
])
def test_bad_tables_name_the_field(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        SessionTable.from_dict(data)
    assert message in str(err.value)


def test_mix_parses_imix_and_weights() -> None:
    mix = FlowMix.parse("udp/imix:2,tcp/64,icmp/100:3")
    assert [(c.proto, c.size, c.weight) for c in mix.classes] == [
        ("udp", 64, 14), ("udp", 570, 8), ("udp", 1518, 2), ("tcp", 64, 1), ("icmp", 100, 3)]
    assert FlowMix.parse("udp").classes[0].size == 64


@pytest.mark.parametrize("text", ["sctp/64", "udp/63", "udp/1519", "udp/64:0", "udp/x", ""])
def test_bad_mix_is_invalid_input(text: str) -> None:
    with pytest.raises(InvalidInput) as err:
        FlowMix.parse(text)
    assert err.value.field == "--mix"


@pytest.mark.parametrize("proto", ["udp", "tcp", "icmp"])
@pytest.mark.parametrize("size", [64, 570, 1518])
def test_g_pdu_decodes_with_scapy(proto: str, size: int) -> None:
    table = SessionTable.generate(2, qfi=6)
    s = table.sessions[1]
    user = user_packet(proto, size, s.ue, ipaddress.IPv4Address(ADDR.server), 40001, 5004)
    frame = g_pdu(table, s, user, **MACS)
    assert len(user) == size - 18 and len(frame) == size - 4 + 44
    pkt = Ether(frame)
    assert (pkt[IP].src, pkt[IP].dst, pkt[UDP].sport, pkt[UDP].dport) == (ADDR.gnb, ADDR.upf_n3, 2152, 2152)
    gtp, container = pkt[GTP_U_Header], pkt[GTPPDUSessionContainer]
    assert (gtp.teid, gtp.gtp_type, gtp.length) == (s.teid_ul, 255, len(user) + 8)
    assert (container.type, container.QFI) == (1, 6)  # UL PDU SESSION INFORMATION
    inner = container.payload
    assert isinstance(inner, IP) and bytes(inner) == user
    assert (inner.src, inner.dst, inner.len) == (str(s.ue), ADDR.server, size - 18)
    assert checksums_valid(user)
    assert not checksums_valid(user[:10] + bytes([user[10] ^ 1]) + user[11:])  # the check can fail


def test_g_pdus_pass_tshark_checks() -> None:
    table = SessionTable.generate(1)
    s = table.sessions[0]
    frames = [g_pdu(table, s, user_packet(p, 64, s.ue, ipaddress.IPv4Address(ADDR.server), 40000, 5004), **MACS)
              for p in ("udp", "tcp", "icmp")]
    rows = tshark_fields(frames, ["gtp.teid", "gtp.ext_hdr.pdu_ses_con.qos_flow_id", "ip.checksum.status",
                                  "udp.checksum.status", "tcp.checksum.status", "icmp.checksum.status",
                                  "_ws.expert.message"])
    if rows is None:
        pytest.skip("tshark is not installed")
    assert [r["gtp.teid"] for r in rows] == [f"0x{s.teid_ul:08x}"] * 3
    assert {r["gtp.ext_hdr.pdu_ses_con.qos_flow_id"] for r in rows} == {str(DEFAULT_QFI)}
    # outer UDP carries no checksum (status 3: not present); every other one is good (1)
    assert [(r["ip.checksum.status"], r["udp.checksum.status"], r["tcp.checksum.status"],
             r["icmp.checksum.status"], r["_ws.expert.message"]) for r in rows] == [
        ("1,1", "3,1", "", "", ""), ("1,1", "3", "1", "", ""), ("1,1", "3", "", "1", "")]


def test_reasons_are_numbered_once() -> None:
    assert [r.number for r in REASONS] == list(range(REASON_COUNT))
    assert {r.name for r in UPF_REASONS} | {r.name for r in GNB_REASONS} == {r.name for r in REASONS}
    assert all(r.text for r in REASONS)


def test_cli_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "upf-sim lab" in out and "upf-sim send" in out


def test_cli_sessions_and_frame(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["sessions", "--ues", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("3 sessions; gNB 198.18.200.1") and "198.18.64.3" in out
    assert cli.main(["frame", "--ues", "1", "--mix", "udp/64,icmp/64"]) == 0
    frames = capsys.readouterr().out.split()
    assert [Ether(bytes.fromhex(f))[GTP_U_Header].teid for f in frames] == [0x1000, 0x1000]
    bad = tmp_path / "bad.yaml"
    bad.write_text("sessions: [{ue: 198.18.64.1, teid_ul: -1, teid_dl: 1}]\n")
    assert cli.main(["sessions", "--sessions", str(bad)]) == 2
    assert "sessions.0.teid_ul" in capsys.readouterr().err
