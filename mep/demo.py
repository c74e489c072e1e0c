"""``make demo``: the whole system on the lab topology, with real traffic, in about a minute.

What it does (docs/demo.md shows a run):

1. builds the topology of DESIGN.md section 7 in network namespaces
   (upf_sim/topology.py) and starts the simulated UPF and gNB (upf_sim: XDP
   on N3 and N6) with four UEs that have real IP stacks;
2. starts the MEP, ``mep run`` inside the MEP host's namespace: the XDP
   engine on its ports, Mp1 on 198.19.0.1:8081 (the address the apps reach),
   Mm5 on its loopback, the DNS responder on its N6 address (the UEs'
   resolver, forwarding other names to the data network's); and the data
   network's servers (cloud video service, web, DNS);
3. MEPM (the ``mepm`` CLI, in the same namespace) adds the MEP as host
   ``edge1`` and instantiates examples/appd/video-analytics.yaml (FORWARD
   of video flows, a DNS rule) and examples/appd/flow-monitor.yaml
   (DUPLICATE of web traffic); each app (``mep.demo_apps``) starts in its
   namespace with the credentials MEPM printed, gets an Mp1 token,
   subscribes to termination and confirms ready;
4. traffic: the UEs resolve video.edge.example and ask the video service by
   that name and by the cloud address, fetch a web page from the data
   network, and upf_sim's generator streams RTP from every UE; a table shows
   the MEP's per-rule counters and where each kind of traffic went;
5. MEPM terminates video-analytics (Mm5 -> MEP -> the app's Mp1
   notification -> confirm_termination): the same traffic goes to the data
   network again;
6. checks every expectation (exit status 1 if one fails) and removes
   everything it made: processes, namespaces, pinned maps, files; on Ctrl-C
   too.

``--once`` (the default without a terminal) runs straight through and
prints each table once; interactively the tables refresh while traffic runs
and Enter moves on. Needs root (namespaces, XDP).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import yaml

from upf_sim.gnb import Gnb
from upf_sim.sessions import SessionTable
from upf_sim.topology import ADDR, Topology
from upf_sim.traffic import FlowMix, Generator
from upf_sim.upf import Upf

from .admin import AdminClient, DaemonNotRunning
from .dataplane.links import in_netns
from .dataplane.reasons import FIB_SENT
from .errors import MepError

__all__ = ["main", "Demo", "Check"]

ROOT = Path(__file__).resolve().parents[1]
APPD_DIR = ROOT / "examples" / "appd"
UES = 4
PHASE_S_ONCE, PHASE_S_LIVE = 4.0, 10.0
RTP_PPS = 2000  # per phase, from all UEs together
MP1_PORT, MM5_PORT, DNS_PORT = 8081, 50051, 53
_START_TIMEOUT_S = 60.0
_CLEAR = "\x1b[H\x1b[2J"


@dataclass
class Check:
    """One expectation: what, whether it held (None: skipped, with the reason in ``detail``), what was seen."""

    what: str
    ok: Optional[bool]
    detail: str = ""


@dataclass
class Phase:
    """What the UEs saw in one traffic phase, and the counters' changes over it."""

    name: str
    video_by_name: dict[str, int] = field(default_factory=dict)  # answered by "edge" / "cloud" / "error"
    video_by_address: dict[str, int] = field(default_factory=dict)
    web: dict[str, int] = field(default_factory=dict)
    dns_answers: dict[str, int] = field(default_factory=dict)
    rtp_sent: int = 0
    rtp_edge: int = 0
    rtp_dn: int = 0
    mirrored: int = 0
    rules: dict[str, dict[str, int]] = field(default_factory=dict)  # app/rule -> packets, bytes (deltas)
    actions: dict[str, str] = field(default_factory=dict)


class _Proc:
    """A process in a namespace whose stdout is JSON lines, read by a thread."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes]) -> None:
        self.name = name
        self.popen = popen
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            try:
                self.lines.put(json.loads(raw))
            except ValueError:
                continue  # not one of its JSON lines (a library's warning)

    def wait_for(self, key: str, timeout: float) -> dict[str, Any]:
        """The first line carrying ``key``; RuntimeError if the process ends or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.seen:
                if key in line:
                    return line
            try:
                self.seen.append(self.lines.get(timeout=max(0.0, min(0.2, deadline - time.monotonic()))))
                continue
            except queue.Empty:
                pass
            if self.popen.poll() is not None and self.lines.empty():
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}) before saying '{key}'")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not say '{key}' within {timeout:.0f} s")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def _socket_in(netns: str, kind: int = socket.SOCK_STREAM) -> socket.socket:
    with in_netns(netns):
        return socket.socket(socket.AF_INET, kind)


class _NsHTTPConnection(http.client.HTTPConnection):
    """An HTTP client connection whose socket lives in network namespace ``netns`` (bound to ``source``)."""

    def __init__(self, netns: str, host: str, port: int, source: Optional[str], timeout: float = 5.0) -> None:
        super().__init__(host, port, timeout=timeout)
        self.netns = netns
        self.source = source

    def connect(self) -> None:
        self.sock = _socket_in(self.netns)
        self.sock.settimeout(self.timeout)
        if self.source is not None:
            self.sock.bind((self.source, 0))
        self.sock.connect((self.host, self.port))


def http_get(netns: str, host: str, port: int, path: str, *, source: Optional[str] = None) -> tuple[int, bytes]:
    """GET ``http://host:port/path`` from inside ``netns`` (from address ``source`` when given)."""
    conn = _NsHTTPConnection(netns, host, port, source)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def ask_tcp(netns: str, source: str, host: str, port: int, line: str, timeout: float = 3.0) -> str:
    """Send one line from ``source`` to host:port inside ``netns``; the one line answered."""
    with _socket_in(netns) as s:
        s.settimeout(timeout)
        s.bind((source, 0))
        s.connect((host, port))
        s.sendall(line.encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.decode(errors="replace").strip()


def resolve(netns: str, source: str, resolver: str, name: str, timeout: float = 2.0) -> list[str]:
    """A records of ``name`` from ``resolver`` (UDP 53), asked from ``source``; [] without an answer."""
    from dnslib import QTYPE, DNSRecord

    with _socket_in(netns, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.bind((source, 0))
        query = DNSRecord.question(name, "A")
        s.sendto(query.pack(), (resolver, DNS_PORT))
        try:
            reply = DNSRecord.parse(s.recv(4096))
        except socket.timeout:
            return []
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A and reply.header.id == query.header.id]


class Demo:
    """One run of the demo in ``workdir``; ``run()`` returns the exit status (see the module docstring)."""

    def __init__(self, workdir: Path, *, interactive: bool, phase_s: float,
                 out: Callable[[str], None] = print) -> None:
        self.addr = ADDR
        self.workdir = workdir
        self.interactive = interactive
        self.phase_s = phase_s
        self.out = out
        self.checks: list[Check] = []
        self.procs: dict[str, _Proc] = {}
        self.step_number = 0
        self.topo = Topology()  # created by build(), removed by teardown()
        self.table = SessionTable.generate(UES)
        self.upf: Optional[Upf] = None
        self.gnb: Optional[Gnb] = None
        self.generator: Optional[Generator] = None
        self.mep: Optional[subprocess.Popen[bytes]] = None
        self.admin = AdminClient(workdir / "admin.sock", timeout=10)
        self.pin_root = Path("/sys/fs/bpf") / f"mep-demo-{os.getpid()}"
        self.mepm_store = f"sqlite:///{workdir / 'mepm.db'}"
        self.app_ids: dict[str, str] = {}

    # -- output ---------------------------------------------------------------------------
    def step(self, title: str) -> None:
        """A numbered step heading; interactively, wait for Enter before it (after the first)."""
        if self.interactive and self.step_number:
            input("\n[Enter: next step, Ctrl-C: tear down and quit] ")
        self.step_number += 1
        self.out(f"\n== {self.step_number}. {title}")

    def check(self, what: str, ok: Optional[bool], detail: str = "") -> None:
        """Record an expectation (None: skipped)."""
        self.checks.append(Check(what, ok, detail))

    # -- set-up ---------------------------------------------------------------------------
    def build(self) -> None:
        """Topology, UPF, gNB with its UEs, and the RTP generator."""
        self.step("the lab topology (DESIGN.md section 7), the UPF and the gNB with their UEs")
        self.topo.create()
        self.out(f"  namespaces: {', '.join(self.topo.ns(r) for r in ('ran', 'upf', 'mep', 'dn', 'app1', 'app2'))}")
        self.upf = Upf(self.table, netns=self.topo.ns("upf"))
        self.gnb = Gnb(self.table, netns=self.topo.ns("ran"))
        self.generator = Generator(self.table, netns=self.topo.ns("ran"), dport=5004)
        ues = ", ".join(str(s.ue) for s in self.table)
        self.out(f"  UPF: {_modes_text(self.upf.modes)} in {self.topo.ns('upf')}, {len(self.table)} PDU sessions")
        self.out(f"  gNB: XDP {self.gnb.mode} + TC on n3 in {self.topo.ns('ran')}; UEs {ues}")

    def _config(self) -> dict[str, Any]:
        a = self.addr
        return {
            "instance": "demo",
            "log": {"level": "info", "format": "json"},
            "store": {"backend": "sqlite", "sqlite": {"path": str(self.workdir / "mep.db")}},
            "dataplane": {"engine": "xdp", "netns": self.topo.ns("mep"), "pin_root": str(self.pin_root),
                          "ports": self.topo.mep_config()["ports"], "apply_batch_ms": 1, "fib_forward": True,
                          "capacity": {"rules": 64, "filters": 128, "flows": 4096, "dns_names": 64}},
            "mp1": {"enabled": True, "listen": f"{a.mep_services}:{MP1_PORT}"},
            "mm5": {"enabled": True, "listen": f"127.0.0.1:{MM5_PORT}"},
            "dns": {"enabled": True, "listen": f"{a.mep_n6}:{DNS_PORT}", "upstream": f"{a.dn_resolver}:53",
                    "upstream_timeout_s": 1},
            "apps": {"confirm_ready_required": True, "graceful_timeout_s": 5},
            "admin": {"socket": str(self.workdir / "admin.sock")},
        }

    def start_mep(self) -> None:
        """``mep run`` in the MEP host's namespace, and the data network's servers."""
        self.step("the MEP (mep run: XDP engine, Mp1, Mm5, DNS) and the data network")
        config = self.workdir / "mep.yaml"
        config.write_text(yaml.safe_dump(self._config(), sort_keys=False))
        log = open(self.workdir / "mep.log", "wb")
        self.mep = self.topo.popen("mep", [sys.executable, "-m", "mep.cli", "run", "-c", str(config)],
                                   cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            if self.mep.poll() is not None:
                raise RuntimeError(f"mep run exited {self.mep.returncode}:\n{self.mep_log()}")
            try:
                status = self.admin.get("/status")
                break
            except DaemonNotRunning:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mep run did not answer in {_START_TIMEOUT_S:.0f} s:\n{self.mep_log()}")
                time.sleep(0.2)
        engine = status["engine"]
        a = self.addr
        self.out(f"  mep run (pid {status['pid']}) in {self.topo.ns('mep')}: engine {engine['engine']}, "
                 f"{_modes_text(engine.get('xdp_modes', {}))}")
        self.out(f"  Mp1 http://{a.mep_services}:{MP1_PORT}   Mm5 127.0.0.1:{MM5_PORT} (plaintext, loopback)   "
                 f"DNS {a.mep_n6}:53 -> upstream {a.dn_resolver}")
        self.procs["dn"] = self._start("dn", "dn", "--address", a.server, "--resolver", a.dn_resolver)
        self.procs["dn"].wait_for("ready", 30)
        self.out(f"  data network: video, web and stats on {a.server}, resolver {a.dn_resolver} "
                 "(video.edge.example -> the cloud address)")

    def mep_log(self, chars: int = 6000) -> str:
        """The end of the daemon's log."""
        path = self.workdir / "mep.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def _start(self, role: str, *args: str) -> _Proc:
        ns_role = {"video-analytics": "app1", "flow-monitor": "app2", "dn": "dn"}[role]
        popen = self.topo.popen(ns_role, [sys.executable, "-m", "mep.demo_apps", *args], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=open(self.workdir / f"{role}.log", "wb"))
        return _Proc(role, popen)

    def mepm(self, *args: str, check: bool = True) -> str:
        """Run ``mepm --store ... ARGS`` in the MEP host's namespace; its stdout."""
        out = self.topo.run("mep", [sys.executable, "-m", "mepm.cli", "--store", self.mepm_store, *args], cwd=ROOT,
                            capture_output=True, timeout=120)
        if check and out.returncode != 0:
            raise RuntimeError(f"mepm {' '.join(args)} exited {out.returncode}:\n{out.stdout.decode()}"
                               f"{out.stderr.decode()}")
        text: str = out.stdout.decode()
        return text

    def instantiate(self) -> None:
        """MEPM deploys both AppDs; each app starts with its credentials and confirms ready over Mp1."""
        self.step("MEPM instantiates two apps from examples/appd/ over Mm5; each confirms ready over Mp1")
        self.out("  $ mepm host add edge1 --address 127.0.0.1:50051 --insecure")
        self.mepm("host", "add", "edge1", "--address", f"127.0.0.1:{MM5_PORT}", "--insecure")
        addresses = {"video-analytics": self.addr.app1, "flow-monitor": self.addr.app2}
        for name in ("video-analytics", "flow-monitor"):
            appd = APPD_DIR / f"{name}.yaml"
            self.out(f"  $ mepm app instantiate examples/appd/{appd.name} --host edge1")
            output = self.mepm("app", "instantiate", str(appd), "--host", "edge1", check=False)
            creds = re.search(r"client_id=(\S+) client_secret=(\S+)", output)
            if creds is None:
                raise RuntimeError(f"mepm printed no credentials for {name}:\n{output}")
            shown = json.loads(self.mepm("app", "show", name, "--json"))
            app_instance_id = shown["instances"]["edge1"]["app_instance_id"]
            self.app_ids[name] = app_instance_id
            self.procs[name] = self._start(
                name, name, "--address", addresses[name], "--mp1", f"http://{self.addr.mep_services}:{MP1_PORT}",
                # KEY=VALUE form: a URL-safe secret may begin with '-', which argparse would take for an option
                f"--app-instance-id={app_instance_id}", f"--client-id={creds.group(1)}",
                f"--client-secret={creds.group(2)}")
        for name in ("video-analytics", "flow-monitor"):
            self.procs[name].wait_for("ready", 30)
            self.out(f"  {name}: {self.app_ids[name]} READY (token, termination subscription, confirm_ready)")
        self._wait_rules({"video-to-edge", "mirror-web"}, present=True)
        for line in self.mepm("rules").rstrip().splitlines():
            self.out(f"  {line}")

    def _wait_rules(self, names: set[str], *, present: bool, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            in_force = {r["trafficRuleId"] for r in self.admin.get("/rules")["rules"]}
            if (names <= in_force) if present else not (names & in_force):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"rules {sorted(names)} {'not' if present else 'still'} in force after "
                                   f"{timeout:.0f} s: {sorted(in_force)}")
            time.sleep(0.1)

    # -- traffic ------------------------------------------------------------------------------
    def _app_stats(self, name: str) -> dict[str, Any]:
        host, path = {"video-analytics": (self.addr.app1, "/video-analytics/v1/stats"),
                      "flow-monitor": (self.addr.app2, "/flow-monitor/v1/stats"),
                      "dn": (self.addr.server, "/stats")}[name]
        proc = self.procs.get(name)
        if proc is None or proc.popen.poll() is not None:
            return {}
        status, body = http_get(self.topo.ns("mep"), host, 8080, path)
        return json.loads(body) if status == 200 else {}

    def _rule_counters(self) -> dict[str, tuple[str, dict[str, int]]]:
        names = {v: k for k, v in self.app_ids.items()}
        rules = {str(r["id"]): (f"{names.get(r['app'], r['app'])}/{r['trafficRuleId']}", r["action"])
                 for r in self.admin.get("/rules")["rules"]}
        stats = self.admin.get("/stats")["rules"]
        return {label: (action, stats.get(rid, {"packets": 0, "bytes": 0})) for rid, (label, action) in rules.items()}

    def _ue_round(self, phase: Phase, i: int) -> None:
        ran, a = self.topo.ns("ran"), self.addr
        ue = str(self.table.sessions[i % len(self.table)].ue)
        answers = resolve(ran, ue, a.mep_n6, "video.edge.example")
        target = answers[0] if answers else None
        key = target or "no answer"
        phase.dns_answers[key] = phase.dns_answers.get(key, 0) + 1
        for where, host in (("video_by_name", target), ("video_by_address", a.server)):
            seen = getattr(phase, where)
            try:
                reply = ask_tcp(ran, ue, host, 554, f"DESCRIBE rtsp://video.edge.example/cam{i}") if host else ""
                who = reply.split(" ", 1)[0] if reply.endswith(f"cam{i}") else "error"
            except OSError:
                who = "error"
            seen[who] = seen.get(who, 0) + 1
        try:
            status, body = http_get(ran, a.server, 80, "/", source=ue)
            who = body.decode().split(" ", 1)[0] if status == 200 else "error"
        except OSError:
            who = "error"
        phase.web[who] = phase.web.get(who, 0) + 1

    def traffic(self, name: str) -> Phase:
        """Run the UEs' requests and the RTP stream for one phase; the table of what happened."""
        generator = self.generator
        assert generator is not None, "build() first"
        phase = Phase(name)
        before = {n: self._app_stats(n) for n in ("video-analytics", "flow-monitor", "dn")}
        rules_before = self._rule_counters()
        sent = [0]  # the generator's count so far (its progress callback), then its total

        def stream_rtp() -> None:
            sent[0] = generator.run(FlowMix.parse("udp/200"), rate=RTP_PPS, seconds=self.phase_s,
                                    tick=lambda r: sent.__setitem__(0, r.packets)).packets

        stream = threading.Thread(target=stream_rtp, name="rtp")
        stream.start()
        i, next_draw = 0, time.monotonic() + 1.0
        while stream.is_alive():
            self._ue_round(phase, i)
            i += 1
            if self.interactive and time.monotonic() >= next_draw:
                self._collect(phase, before, rules_before, sent[0])
                self.out(_CLEAR + f"== {self.step_number}. {name} (live; Ctrl-C tears down and quits)\n"
                         + self.render(phase))
                next_draw = time.monotonic() + 1.0
            time.sleep(0.1)
        stream.join()
        time.sleep(0.5)  # the last frames reach the counters
        self._collect(phase, before, rules_before, sent[0])
        self.out((_CLEAR + f"== {self.step_number}. {name}\n" if self.interactive else "") + self.render(phase))
        return phase

    def _collect(self, phase: Phase, before: dict[str, dict[str, Any]],
                 rules_before: dict[str, tuple[str, dict[str, int]]], sent: int) -> None:
        now = {n: self._app_stats(n) for n in ("video-analytics", "flow-monitor", "dn")}

        def delta(name: str, key: str) -> int:
            return int(now[name].get(key, 0)) - int(before[name].get(key, 0)) if now[name] else 0

        phase.rtp_sent = sent
        phase.rtp_edge = delta("video-analytics", "rtp_packets")
        phase.rtp_dn = delta("dn", "rtp_packets")
        phase.mirrored = delta("flow-monitor", "mirrored_packets")
        phase.rules, phase.actions = {}, {}
        for label, (action, counts) in self._rule_counters().items():
            old = rules_before.get(label, ("", {"packets": 0, "bytes": 0}))[1]
            phase.rules[label] = {k: counts[k] - old[k] for k in ("packets", "bytes")}
            phase.actions[label] = action

    def render(self, phase: Phase) -> str:
        """The phase's table: per-rule counters, where each kind of traffic went, N3 counters."""
        lines = ["", f"  {'traffic rule in force (app/rule)':<36} {'action':<23} {'packets':>8} {'bytes':>10}"]
        for label, counts in phase.rules.items():
            lines.append(f"  {label:<36} {phase.actions[label]:<23} {counts['packets']:>8} {counts['bytes']:>10}")
        if not phase.rules:
            lines.append("  (none)")
        lines += ["", f"  {'what the UEs did':<44} {'edge (app)':>10} {'DN (cloud)':>10} {'failed':>6}"]
        for label, seen in (("video by name (DNS, TCP 554)", phase.video_by_name),
                            ("video to the cloud address (TCP 554)", phase.video_by_address),
                            ("web page from the DN (TCP 80)", phase.web)):
            lines.append(f"  {label:<44} {seen.get('edge', 0):>10} {seen.get('cloud', 0):>10} "
                         f"{sum(v for k, v in seen.items() if k not in ('edge', 'cloud')):>6}")
        lines.append(f"  {f'RTP stream, {phase.rtp_sent} sent (UDP 5004, upf_sim)':<44} {phase.rtp_edge:>10} "
                     f"{phase.rtp_dn:>10}")
        dns = ", ".join(f"{k} x{v}" for k, v in phase.dns_answers.items()) or "-"
        lines.append(f"  video.edge.example resolved to: {dns}")
        lines.append(f"  web packets mirrored to flow-monitor: {phase.mirrored}")
        assert self.upf is not None and self.gnb is not None, "build() first"
        upf, gnb = self.upf.counters(), self.gnb.counters()
        lines.append(f"  N3 so far: UPF up {upf.total('ul').packets} / down {upf.total('dl').packets} packets, "
                     f"gNB delivered {gnb.total('dl').packets}; dropped: UPF {upf.dropped().packets}, "
                     f"gNB {gnb.dropped().packets}")
        return "\n".join(lines)

    # -- the story ---------------------------------------------------------------------------
    def terminate_video(self) -> None:
        """MEPM terminates video-analytics; the app confirms over Mp1 and exits."""
        self.step("MEPM terminates video-analytics (Mm5 -> MEP -> Mp1 notification -> confirm_termination)")
        self.out("  $ mepm app terminate video-analytics")
        for line in self.mepm("app", "terminate", "video-analytics", "--wait", "30").rstrip().splitlines():
            self.out(f"  {line}")
        proc = self.procs["video-analytics"]
        ended = proc.wait_for("terminated", 30)
        proc.popen.wait(timeout=10)
        self.out(f"  video-analytics: notified, confirmed termination, exited (served {ended['stats']})")
        self._wait_rules({"video-to-edge"}, present=False)
        self.out("  video-to-edge is no longer in force; mirror-web (flow-monitor) still is")

    def judge(self, ready: Phase, after: Phase) -> None:
        """Turn the two phases into checks."""
        self.check("every video request by name was answered by the edge app",
                   _only(ready.video_by_name, "edge"), str(ready.video_by_name))
        self.check("every video request to the cloud address was steered to the edge app (FORWARD, FLOW)",
                   _only(ready.video_by_address, "edge"), str(ready.video_by_address))
        self.check("the whole RTP stream reached the edge app, none the DN",
                   ready.rtp_sent > 0 and ready.rtp_edge == ready.rtp_sent and ready.rtp_dn == 0,
                   f"sent {ready.rtp_sent}, edge {ready.rtp_edge}, DN {ready.rtp_dn}")
        self.check("the MEP's DNS rule answered video.edge.example with the app's address",
                   set(ready.dns_answers) == {self.addr.app1}, str(ready.dns_answers))
        self.check("after termination the name resolves to the cloud (the upstream's answer)",
                   set(after.dns_answers) == {self.addr.server}, str(after.dns_answers))
        for phase in (ready, after):
            self.check(f"web pages came from the DN and every web packet was mirrored ({phase.name})",
                       _only(phase.web, "cloud") and phase.mirrored > 0
                       and phase.mirrored == phase.rules.get("flow-monitor/mirror-web", {}).get("packets"),
                       f"{phase.web}; mirrored {phase.mirrored}, rule counted "
                       f"{phase.rules.get('flow-monitor/mirror-web', {}).get('packets')}")
        self.check("the traffic rules counted it (video-to-edge, mirror-web)",
                   ready.rules.get("video-analytics/video-to-edge", {}).get("packets", 0) > 0
                   and ready.rules.get("flow-monitor/mirror-web", {}).get("packets", 0) > 0,
                   str({k: v["packets"] for k, v in ready.rules.items()}))
        self.check("after termination every video request went to the DN",
                   _only(after.video_by_name, "cloud") and _only(after.video_by_address, "cloud"),
                   f"by name {after.video_by_name}, by address {after.video_by_address}")
        self.check("after termination the whole RTP stream reached the DN",
                   after.rtp_sent > 0 and after.rtp_dn == after.rtp_sent,
                   f"sent {after.rtp_sent}, DN {after.rtp_dn}")
        fib = self.admin.get("/stats").get("fib", {})
        self.check("XDP sent the data network's traffic to its next hop itself (dataplane.fib_forward)",
                   sum(fib.get(o.name, {}).get("packets", 0) for o in FIB_SENT) >= after.rtp_dn,
                   ", ".join(f"{k} {v['packets']}" for k, v in fib.items()) or "nothing offered to the FIB")
        self.check("video-to-edge is gone from the rules in force", "video-analytics/video-to-edge" not in after.rules,
                   str(sorted(after.rules)))
        assert self.upf is not None and self.gnb is not None, "build() first"
        upf, gnb = self.upf.counters(), self.gnb.counters()
        self.check("the UPF and the gNB dropped nothing", upf.dropped().packets == 0 and gnb.dropped().packets == 0,
                   f"UPF {upf.dropped().packets}, gNB {gnb.dropped().packets}")

    def run(self) -> int:
        """The whole demo; the exit status. Tears down in any case."""
        failed = False
        try:
            self.build()
            self.start_mep()
            self.instantiate()
            self.step(f"traffic with both apps READY ({self.phase_s:.0f} s: UE requests + RTP stream from "
                      f"{UES} UEs at {RTP_PPS} pps)")
            ready = self.traffic("both apps READY")
            self.terminate_video()
            self.step(f"the same traffic with video-analytics terminated ({self.phase_s:.0f} s)")
            after = self.traffic("video-analytics terminated")
            self.judge(ready, after)
        except (RuntimeError, OSError, subprocess.SubprocessError, MepError) as exc:
            failed = True
            self.out(f"\ndemo: {exc}")
            for role, proc in self.procs.items():
                log = self.workdir / f"{role}.log"
                if proc.popen.poll() is not None and log.exists():
                    self.out(f"--- {role} exited {proc.popen.returncode}; the end of its stderr ({log}):\n"
                             f"{log.read_text(errors='replace')[-2000:]}")
            if self.mep is not None:
                self.out(f"--- the end of the daemon's log ({self.workdir / 'mep.log'}):\n{self.mep_log(3000)}")
        finally:
            self.teardown()
        return self.report(failed)

    def report(self, failed: bool) -> int:
        """Print the checks; 0 if every one held (skipped ones are listed, and do not fail)."""
        self.out("\n== checks")
        for c in self.checks:
            mark = {True: "ok  ", False: "FAIL", None: "skip"}[c.ok]
            self.out(f"  {mark} {c.what}" + (f"  [{c.detail}]" if c.detail and c.ok is not True else ""))
        bad = failed or any(c.ok is False for c in self.checks)
        self.out("\n" + ("SOME EXPECTATIONS FAILED" if bad else
                         f"every expectation held ({sum(c.ok is True for c in self.checks)} checks)"))
        return 1 if bad else 0

    def teardown(self) -> None:
        """Stop every process, close the programs, remove namespaces and pinned maps (errors reported, not raised)."""
        self.out("\n== tearing down: apps, data network, mep run, UPF/gNB programs, namespaces, pinned maps")
        for proc in self.procs.values():
            _quietly(proc.stop)
        if self.mep is not None and self.mep.poll() is None:
            self.mep.terminate()
            try:
                self.mep.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.mep.kill()
                self.mep.wait()
        for endpoint in (self.generator, self.gnb, self.upf):
            if endpoint is not None:
                _quietly(endpoint.close)
        _quietly(self.topo.destroy)
        shutil.rmtree(self.pin_root, ignore_errors=True)
        left = [n for n in _netns_names() if n.endswith(f"-{self.topo.tag}")]
        self.check("teardown left no namespace and no pinned map", not left and not self.pin_root.exists(),
                   f"namespaces {left}, {self.pin_root} {'exists' if self.pin_root.exists() else 'gone'}")


def _modes_text(modes: dict[str, str]) -> str:
    """``XDP native on n6, dn, app1, app2 (+4 mirror veths)`` from the engine's port -> mode map."""
    parts = []
    for mode in sorted(set(modes.values())):
        ports = [p for p, m in modes.items() if m == mode]
        mirrors = [p for p in ports if p.startswith("mep-mir")]
        named = ", ".join(p for p in ports if p not in mirrors)
        parts.append(f"XDP {mode} on {named}" + (f" (+{len(mirrors)} mirror veths)" if mirrors else ""))
    return "; ".join(parts) or "no XDP ports"


def _only(seen: dict[str, int], who: str) -> bool:
    return bool(seen) and set(seen) == {who}


def _quietly(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception as exc:  # teardown goes on; the failure is shown
        print(f"  teardown: {getattr(fn, '__qualname__', fn)}: {exc}", file=sys.stderr)


def _netns_names() -> list[str]:
    from pyroute2 import netns

    names: list[str] = netns.listnetns()
    return names


def _write(text: str) -> None:
    print(text, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m mep.demo``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m mep.demo",
        description="The MEP end to end: UEs -> gNB -> UPF -> MEP (XDP, Mp1, Mm5, DNS) -> MEC apps or the DN.",
        epilog="examples:\n  make demo\n  make demo ARGS=--once\n  python -m mep.demo --once --seconds 3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--once", action="store_true",
                        help="run straight through, tables printed once (default without a terminal)")
    parser.add_argument("--seconds", type=float, help=f"traffic per phase (default {PHASE_S_ONCE:.0f} with "
                        f"--once, {PHASE_S_LIVE:.0f} interactively)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, configuration)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("python -m mep.demo: needs root (network namespaces, XDP); try: sudo make demo", file=sys.stderr)
        return 2
    interactive = sys.stdout.isatty() and sys.stdin.isatty() and not args.once
    phase_s = args.seconds or (PHASE_S_LIVE if interactive else PHASE_S_ONCE)
    write = _write
    workdir = Path(tempfile.mkdtemp(prefix="mep-demo-"))
    write("MEP demo: UEs -> gNB -> UPF (upf_sim) -> MEP (XDP) -> MEC apps or the data network; "
          f"work directory {workdir}")
    started = time.monotonic()
    # Ctrl-C (even when started with SIGINT ignored) and SIGTERM both tear everything down.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        code = Demo(workdir, interactive=interactive, phase_s=phase_s, out=write).run()
    except KeyboardInterrupt:
        write("\ninterrupted: torn down")
        code = 130
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    write(f"({time.monotonic() - started:.0f} s)")
    return code


if __name__ == "__main__":
    sys.exit(main())
