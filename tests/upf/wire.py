"""Seeing upf_sim's frames on the wire: AF_PACKET capture in a namespace, pass-only XDP peers, tshark.

- ``capture(netns, ifname, want)``: the frames arriving on ``ifname`` while
  the block runs, drained until ``want`` frames of interest have arrived (or
  two seconds of silence); the frames are in ``.frames`` after the block.
- ``pass_peer(topo, role, ifname)``: the topology's pass-only XDP program on
  a port while the block runs, so that native redirects into its veth peer
  arrive and reach the stack (and the capture).
- ``checksums_valid(packet)``: scapy's recomputation of every checksum agrees.
- ``tshark_fields(frames, fields)``: tshark's view of the frames, one dict
  per frame, with IP/UDP/TCP checksum validation on; None without tshark.
"""
from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from mep.dataplane.links import in_netns
from mep.dataplane.testrun import XDP_FLAGS_DRV_MODE, ProbeProgram
from upf_sim.topology import Topology

ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = 33  # asm-generic/socket.h: SO_RCVBUF beyond rmem_max (root)
_SILENCE_S = 2.0


@dataclass
class Capture:
    """Frames seen on one port, in arrival order; ``keep`` selects the frames of interest."""

    keep: Callable[[bytes], bool]
    frames: list[bytes] = field(default_factory=list)


@contextlib.contextmanager
def capture(netns: str, ifname: str, want: int, keep: Callable[[bytes], bool]) -> Iterator[Capture]:
    """See the module docstring; only incoming frames are kept."""
    with in_netns(netns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
        sock.bind((ifname, 0))
        result = Capture(keep)
        yield result
        sock.settimeout(_SILENCE_S)
        while len(result.frames) < want:
            try:
                frame, addr = sock.recvfrom(65535)
            except socket.timeout:
                break
            if addr[2] != socket.PACKET_OUTGOING and keep(frame):
                result.frames.append(frame)
    finally:
        sock.close()


@contextlib.contextmanager
def pass_peer(topo: Topology, role: str, ifname: str) -> Iterator[None]:
    """A pass-only XDP program on ``ifname`` of namespace ``role`` for the block."""
    probe = ProbeProgram.load()
    try:
        with in_netns(topo.ns(role)):
            probe.attach(ifname, XDP_FLAGS_DRV_MODE)
        try:
            yield
        finally:
            with in_netns(topo.ns(role)):
                probe.detach(ifname, XDP_FLAGS_DRV_MODE)
    finally:
        probe.close()


def is_gtpu(frame: bytes) -> bool:
    """IPv4 UDP to port 2152 (no IP options)."""
    return len(frame) > 42 and frame[12:14] == b"\x08\x00" and frame[23] == 17 and frame[36:38] == b"\x08\x68"


def checksums_valid(packet: bytes) -> bool:
    """True if every IPv4, UDP, TCP and ICMP checksum in IP packet ``packet`` is right (scapy recomputes them)."""
    parsed = IP(packet)
    for layer in (IP, UDP, TCP, ICMP):
        found = parsed.getlayer(layer)
        if found is not None and not (layer is UDP and found.chksum == 0):
            found.chksum = None
    return bytes(parsed) == packet


def tshark_fields(frames: list[bytes], fields: list[str]) -> Optional[list[dict[str, str]]]:
    """tshark's reading of ``frames`` (checksums validated; no TCP sequence analysis: generated
    segments repeat their numbers), or None when tshark is not installed."""
    tshark = shutil.which("tshark")
    if tshark is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        pcap = Path(tmp) / "frames.pcap"
        wrpcap(str(pcap), [Ether(f) for f in frames])
        out = subprocess.run(
            [tshark, "-r", str(pcap), "-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
             "-o", "tcp.check_checksum:TRUE", "-o", "tcp.analyze_sequence_numbers:FALSE",
             "-T", "fields", "-E", "separator=|", "-E", "occurrence=a",
             *(arg for f in fields for arg in ("-e", f))],
            capture_output=True, text=True, timeout=60, check=True,
        )
    return [dict(zip(fields, line.split("|"))) for line in out.stdout.splitlines()]
