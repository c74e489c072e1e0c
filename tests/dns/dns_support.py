"""Shared pieces of the DNS tests: rule sets, real clients, a real unbound, a scripted upstream.

- ``dns_rule``/``ruleset``: CompiledDnsRule/CompiledRuleSet as the compiler makes them.
- ``query``: a query message built with dnslib (or by hand where dnslib cannot).
- ``udp_exchange``/``tcp_exchange``: blocking clients on real sockets (call them
  through ``asyncio.to_thread`` when the server runs in the test's loop).
- ``kdig``: knot-dnsutils, the client the issue names.
- ``Unbound``: unbound with local-data, in its own directory, on a given
  address; ``"."`` is a static zone with an SOA, so it never recurses: every
  name without local-data is NXDOMAIN.
- ``ScriptedUpstream``: a UDP socket answering with what the test tells it
  (spoofed IDs, wrong questions, silence).
"""
from __future__ import annotations

import asyncio
import ipaddress
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import pytest
from dnslib import EDNS0, QTYPE, RR, A, DNSLabel, DNSRecord

from mep.config import DnsConfig
from mep.dataplane.reasons import Verdict
from mep.dataplane.ruleset import CompiledDnsRule, CompiledRuleSet
from mep.dns import DnsServer

__all__ = [
    "APP",
    "dns_rule",
    "ruleset",
    "query",
    "udp_exchange",
    "tcp_exchange",
    "kdig",
    "Unbound",
    "ScriptedUpstream",
    "answer_to",
    "rcode_of",
    "ServerThread",
]

APP = "app-1"
_START_TIMEOUT_S = 10.0


def dns_rule(rule_id: int, name: str, address: str, *, ttl: int = 30, app: str = APP) -> CompiledDnsRule:
    """A compiled DNS rule: A or AAAA by the address's family."""
    ip = ipaddress.ip_address(address)
    return CompiledDnsRule(rule_id, app, f"d{rule_id}", name, 1 if ip.version == 4 else 28, ip.packed, ttl)


def ruleset(*rules: CompiledDnsRule, generation: int = 1) -> CompiledRuleSet:
    """A rule set holding only ``rules`` (sorted as the compiler sorts them)."""
    ordered = tuple(sorted(rules, key=lambda d: (d.name, d.qtype, d.rule_id)))
    return CompiledRuleSet(generation, generation, Verdict.PASS, (), (), dns_rules=ordered)


def query(name: str, qtype: str = "A", *, msg_id: int = 0x1234, rd: bool = True,
          edns: Optional[int] = None, do: bool = False, version: int = 0) -> bytes:
    """A query for ``name``/``qtype`` as a stub sends it; ``edns``: with an OPT of that payload size."""
    record = DNSRecord.question(name, qtype)
    record.header.id = msg_id
    record.header.rd = int(rd)
    if edns is not None:
        record.add_ar(EDNS0(udp_len=edns, version=version, flags="do" if do else ""))
    packed = bytes(record.pack())
    return packed


def udp_exchange(address: tuple[str, int], msg: bytes, *, timeout: float = 5.0,
                 family: socket.AddressFamily = socket.AF_INET) -> bytes:
    """Send ``msg`` over UDP and return the first datagram back."""
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(msg, address)
        data, _ = s.recvfrom(65535)
        return data


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError(f"closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def tcp_exchange(address: tuple[str, int], msgs: Sequence[bytes], *, timeout: float = 5.0) -> list[bytes]:
    """Send ``msgs`` pipelined on one TCP connection; their answers in arrival order."""
    with socket.create_connection(address, timeout=timeout) as s:
        s.sendall(b"".join(len(m).to_bytes(2, "big") + m for m in msgs))
        answers = []
        for _ in msgs:
            length = int.from_bytes(_recv_exactly(s, 2), "big")
            answers.append(_recv_exactly(s, length))
        return answers


def kdig(server: str, port: int, *args: str, run: Callable[..., "subprocess.CompletedProcess[bytes]"] = subprocess.run,
         ) -> str:
    """``kdig @server -p port ARGS +noall +header +answer +opt`` output (``run`` may enter a namespace)."""
    if shutil.which("kdig") is None:
        pytest.skip("kdig (knot-dnsutils) is not installed; run scripts/setup.sh")
    out = run(["kdig", f"@{server}", "-p", str(port), *args, "+noall", "+header", "+answer", "+opt",
               "+time=5", "+retry=0"], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr.decode()
    text: str = out.stdout.decode()
    return text


class Unbound:
    """unbound serving ``local_data`` on ``host``:``port`` (see the module docstring)."""

    def __init__(self, workdir: Path, host: str, port: int, local_data: Sequence[str]) -> None:
        if shutil.which("unbound") is None:
            pytest.skip("unbound is not installed; run scripts/setup.sh")
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host, self.port = host, port
        lines = [
            "server:",
            f"  interface: {host}@{port}",
            f"  port: {port}",
            "  do-daemonize: no", '  username: ""', '  chroot: ""', f'  directory: "{self.dir}"',
            '  pidfile: ""', "  use-syslog: no", '  logfile: ""', "  verbosity: 0",
            '  module-config: "iterator"', "  num-threads: 1",
            f"  do-ip6: {'yes' if ':' in host else 'no'}",
            "  access-control: 0.0.0.0/0 allow", "  access-control: ::/0 allow",
            '  local-zone: "." static',
            '  local-data: ". 3600 IN SOA ns. host. 1 3600 600 86400 60"',
            *[f"  local-data: '{rr}'" for rr in local_data],
            "remote-control:", "  control-enable: no",
        ]
        self.config = self.dir / "unbound.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: Optional["subprocess.Popen[bytes]"] = None

    def start(self, popen: Callable[..., "subprocess.Popen[bytes]"] = subprocess.Popen,
              probe: Optional[Callable[[], bool]] = None) -> "Unbound":
        """Start it and wait until it answers (``probe``, by default a UDP query to it)."""
        log = open(self.dir / "unbound.log", "ab")
        self.proc = popen(["unbound", "-d", "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        probe = probe or self._answers
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not probe():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"unbound did not start:\n{(self.dir / 'unbound.log').read_text()}")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        try:
            udp_exchange((self.host, self.port), query("probe.invalid"), timeout=0.2)
        except OSError:
            return False
        return True

    def stop(self) -> None:
        """Terminate it (and wait)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


class ScriptedUpstream:
    """A UDP upstream on 127.0.0.1 that answers each query with ``script(query)``: a list of datagrams."""

    def __init__(self, script: Callable[[bytes], list[bytes]]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)  # how soon close() is noticed
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.received: list[bytes] = []
        self._script = script
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.received.append(data)
            for datagram in self._script(data):
                self.sock.sendto(datagram, peer)

    def close(self) -> None:
        """Stop answering."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def answer_to(msg: bytes, *, address: str = "198.18.100.7", ttl: int = 60, msg_id: Optional[int] = None,
              name: Optional[str] = None) -> bytes:
    """An upstream's answer to ``msg`` (built with dnslib): one A record; optionally another id or name."""
    reply = DNSRecord.parse(msg).reply()
    if name is not None:
        reply.q.qname = DNSLabel(name)
    reply.add_answer(RR(reply.q.qname, QTYPE.A, rdata=A(address), ttl=ttl))
    if msg_id is not None:
        reply.header.id = msg_id
    packed = bytes(reply.pack())
    return packed


def rcode_of(msg: bytes) -> int:
    """The 4-bit RCODE of a message."""
    flags: int = struct.unpack_from("!H", msg, 2)[0]
    return flags & 0xF


class ServerThread:
    """A DnsServer on 127.0.0.1 running in its own event loop on a thread, for synchronous tests
    (hypothesis). ``call(fn)`` runs ``fn()`` in that loop and returns its result."""

    def __init__(self, rules: Sequence[CompiledDnsRule], **config: object) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server = DnsServer(DnsConfig.model_validate({"enabled": True, "listen": "127.0.0.1:0", **config}))
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        self.call(lambda: self.server.update(ruleset(*rules)))
        assert self.server.address is not None
        self.address = self.server.address

    def call(self, fn: Callable[[], object]) -> object:
        """``fn()`` evaluated in the server's loop."""

        async def run() -> object:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def stop(self) -> None:
        """Stop the server and its loop."""
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()
