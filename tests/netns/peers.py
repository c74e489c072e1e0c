"""Small network peers run inside the topology's namespaces (``python -m tests.netns.peers ...``).

Each prints one JSON line when done, so a test reads exactly what happened:

- ``echo-tcp HOST PORT TAG``: accept connections; reply TAG + ":" + what arrived.
- ``count-udp HOST PORT SECONDS``: count datagrams until SECONDS of silence after the first.
- ``sniff-udp IFACE PORT SECONDS``: count frames carrying UDP to PORT on IFACE (AF_PACKET).
- ``send-udp SRC DST PORT COUNT PPS``: send COUNT numbered datagrams at about PPS.
- ``tcp-ask SRC DST PORT TEXT``: connect from SRC, send TEXT, print the reply.
"""
from __future__ import annotations

import json
import socket
import struct
import sys
import time


def echo_tcp(host: str, port: str, tag: str) -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, int(port)))
    srv.listen(16)
    print(json.dumps({"listening": True}), flush=True)
    while True:
        conn, _ = srv.accept()
        with conn:
            data = conn.recv(4096)
            conn.sendall(tag.encode() + b":" + data)


def count_udp(host: str, port: str, seconds: str) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((host, int(port)))
    print(json.dumps({"listening": True}), flush=True)
    n, seen = 0, set()
    s.settimeout(float(seconds) * 4)
    try:
        while True:
            data = s.recv(2048)
            n += 1
            if len(data) >= 4:
                seen.add(struct.unpack("!I", data[:4])[0])
            s.settimeout(float(seconds))
    except socket.timeout:
        pass
    print(json.dumps({"received": n, "distinct": len(seen)}), flush=True)


def sniff_udp(iface: str, port: str, seconds: str) -> None:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.bind((iface, 0))
    print(json.dumps({"listening": True}), flush=True)
    n = 0
    s.settimeout(float(seconds) * 4)
    try:
        while True:
            frame, addr = s.recvfrom(4096)
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            if len(frame) >= 38 and frame[12:14] == b"\x08\x00" and frame[23] == 17:
                ihl = (frame[14] & 0x0F) * 4
                if struct.unpack("!H", frame[14 + ihl + 2:14 + ihl + 4])[0] == int(port):
                    n += 1
                    s.settimeout(float(seconds))
    except socket.timeout:
        pass
    print(json.dumps({"frames": n}), flush=True)


def send_udp(src: str, dst: str, port: str, count: str, pps: str) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    gap = 1.0 / float(pps)
    start = time.perf_counter()
    for i in range(int(count)):
        s.sendto(struct.pack("!I", i) + bytes(60), (dst, int(port)))
        delay = start + (i + 1) * gap - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    print(json.dumps({"sent": int(count), "seconds": time.perf_counter() - start}), flush=True)


def tcp_ask(src: str, dst: str, port: str, text: str) -> None:
    s = socket.socket()
    s.bind((src, 0))
    s.settimeout(5)
    s.connect((dst, int(port)))
    s.sendall(text.encode())
    print(json.dumps({"reply": s.recv(4096).decode()}), flush=True)


COMMANDS = {"echo-tcp": echo_tcp, "count-udp": count_udp, "sniff-udp": sniff_udp, "send-udp": send_udp,
            "tcp-ask": tcp_ask}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](*sys.argv[2:])
