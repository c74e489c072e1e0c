"""DNS rule answers: the XDP responder and the user-space responder against unbound, same names, one run.

The lab topology (upf_sim/topology.py). dnsperf runs in the upf namespace
(the UE side of N6), pinned to CPU 0, one thread, and queries the MEP's N6
address over the n6 veth. Three responders serve the same --names A rules in
the mep namespace at once, their processes pinned to CPU 1: "xdp" is `mep
run` with the XDP engine, its DNS listener on port 5354, so the XDP program
on n6 answers the rules' queries itself (XDP_TX); "userspace" is a second
`mep run` (reference engine: every query reaches its user-space responder)
on port 53; "unbound" is unbound 1.17 on port 5300 (one thread, the names
as local-data, "." a static zone, so nothing recurses). The XDP program on
n6 passes the other two's queries to the stack, so all three share the
receive path. n6 (MEP side) runs threaded NAPI, its NAPI thread pinned to
CPU 1 too: that thread runs the XDP program and, for the two socket
responders, the receive stack up to their socket. Responder CPU is the
responder process's user+system time plus that NAPI thread's
(/proc/<pid>/stat); for "xdp" nearly all of it is the NAPI thread. The
client's side of n6 keeps NAPI in softirq: receiving an answer up to
dnsperf's socket runs in the context that sent it (the XDP NAPI thread,
unbound's sendto) and is billed to that responder, the same for all three
(a threaded client side, its thread on the generator's CPU, was tried: it
adds a cross-CPU wakeup per batch of answers, which cost the XDP
responder more than the receive it took away, and pushed its p99 at max
past 1 ms). After the rows, one more untimed run of the XDP responder at
max has perf sample its NAPI thread: the report says what share of it
the MEP's BPF programs are. Rows alternate responders rate by rate, so
all meet the same background load.
The query file asks each name for A (an answer) and AAAA (NODATA). Before
timing, each responder is checked: kdig gets the rule's address and NODATA,
and one pass of dnsperf over the file must complete every query with
NOERROR; for "xdp", the program's counters must have grown by every query
of that pass and the user-space listener must have seen none. Each row is
dnsperf -l SECONDS at an offered rate (-Q; "max": as fast as 200 queries
outstanding allow), with -v so that every answer's latency is kept
(percentiles from those). CPU busy is both CPUs' busy time (/proc/stat,
softirq included), generator included, and, measured over an idle second
before each row, the background: busy CPU of whatever else runs on the
machine (background_util, in cores). "limit" says what held the answered
rate, the first that applies: the offered rate (reached), the responder (at
>= 90% of a core), other load sharing the CPUs (background >= 0.3 cores),
the generator (dnsperf's process at >= 90% of a core: the responder's qps
is then a lower bound), or the 200 outstanding queries. dnsperf counts the
queries still outstanding when -l ends as lost.

Per-query cost (report dns_responders_query_cost): BPF_PROG_TEST_RUN of the MEP
program (loaded in a namespace of its own with the same rules) on an A
query for a rule name, one run per call (an answer rewrites the frame in
place, so neither repeat mode nor live frames can rerun it), mean and median
of the kernel's per-run time over --calls calls, against a program that
only returns XDP_TX timed the same way; every call's answer is counted by
the program's per-rule counter and checked. Beside it, the user-space
responder's Responder.respond() in process (no socket) on the same query.

Examples:
    python -m bench.dns_responders                      # 100 names, 10 s a row
    python -m bench.dns_responders --names 1000 --seconds 5 --rates 10000,max
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from bench._harness import Report, cpu_seconds, percentile, pinned_cpu, progress, threaded_napi
from mep.admin import AdminClient, DaemonNotRunning
from upf_sim.topology import ADDR, MEP_PORTS, Topology

QUICK_ARGS = ["--seconds", "2", "--rates", "10000,max", "--calls", "2000"]

ROOT = Path(__file__).resolve().parents[1]
XDP_PORT, MEP_PORT, UNBOUND_PORT = 5354, 53, 5300  # all three run at once, so their rows can alternate
GENERATOR_CPU, RESPONDER_CPU = 0, 1
_START_TIMEOUT_S = 30.0


def names(n: int) -> list[tuple[str, str]]:
    """(name, address) of the benchmark's DNS rules."""
    return [(f"app{i}.mec.example", f"198.19.{1 + i // 250}.{1 + i % 250}") for i in range(n)]


def busy_per_cpu() -> list[float]:
    """Busy seconds of each CPU so far (user+nice+system+irq+softirq+steal)."""
    out = []
    tick = os.sysconf("SC_CLK_TCK")
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3].isdigit():
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in line.split()[1:9])
            out.append((user + nice + system + irq + softirq + steal) / tick)
    return out


@dataclass
class Responder:
    """A running responder: its name, port, process, log, and its admin API when it is `mep run`."""

    name: str
    port: int
    proc: "subprocess.Popen[bytes]"
    log: Path
    admin: Optional[AdminClient] = None
    extra_pids: list[int] = field(default_factory=list)  # threads whose CPU counts as the responder's

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def cpu(self) -> float:
        return cpu_seconds([self.proc.pid, *self.extra_pids])


def kdig(topo: Topology, port: int, name: str, qtype: str) -> str:
    """kdig's header and answer from the UE side, "" if it got no answer."""
    out = topo.run("upf", ["kdig", f"@{ADDR.mep_n6}", "-p", str(port), name, qtype, "+noall", "+header",
                           "+answer", "+time=2", "+retry=0"], capture_output=True)
    return out.stdout.decode() if out.returncode == 0 else ""


def wait_for(what: str, ready: Callable[[], bool], responder: Responder) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not ready():
        if responder.proc.poll() is not None or time.monotonic() > deadline:
            responder.stop()
            raise RuntimeError(f"{what} did not come up:\n{responder.log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)


def start_mep(topo: Topology, workdir: Path, rules: list[tuple[str, str]], *, name: str, engine: str,
              port: int, pin_root: Path) -> Responder:
    """`mep run` in the mep namespace with the DNS rules of one READY app, listening on ``port``."""
    home = workdir / name
    home.mkdir()
    admin_socket = home / "admin.sock"
    config = {
        "instance": f"dnsbench-{name}",
        "log": {"level": "warning", "format": "text"},
        "store": {"sqlite": {"path": str(home / "state" / "mep.db")}},
        "dataplane": {"engine": engine, "ports": MEP_PORTS, "pin_root": str(pin_root),
                      "capacity": {"dns_names": max(len(rules), 1)}},
        "mp1": {"enabled": False}, "mm5": {"enabled": False},
        "dns": {"enabled": True, "listen": f"{ADDR.mep_n6}:{port}", "max_inflight": 4096},
        "admin": {"socket": str(admin_socket)},
    }
    path = home / "mep.yaml"
    path.write_text(yaml.safe_dump(config))
    log = home / "mep.log"
    with open(log, "ab") as out:
        proc = topo.popen("mep", ["taskset", "-c", str(RESPONDER_CPU), sys.executable, "-m", "mep.cli", "run",
                                  "-c", str(path)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    admin = AdminClient(admin_socket, timeout=30)
    responder = Responder(name, port, proc, log, admin)

    def admin_up() -> bool:
        try:
            admin.get("/status")
        except DaemonNotRunning:
            return False
        return True

    wait_for(f"mep run ({name})", admin_up, responder)
    admin.post("/apps", {"app_instance_id": "bench", "confirm_ready_required": False, "dns_rules": [
        {"dnsRuleId": f"d{i}", "domainName": n, "ipAddressType": "IP_V4", "ipAddress": addr, "ttl": 300,
         "state": "ACTIVE"} for i, (n, addr) in enumerate(rules)]})
    wait_for("the DNS rules", lambda: rules[-1][1] in kdig(topo, port, rules[-1][0], "A"), responder)
    return responder


def start_unbound(topo: Topology, workdir: Path, rules: list[tuple[str, str]]) -> Responder:
    """unbound in the mep namespace, one thread, the rules' names as local-data."""
    conf = workdir / "unbound.conf"
    lines = ["server:", f"  interface: {ADDR.mep_n6}@{UNBOUND_PORT}", f"  port: {UNBOUND_PORT}",
             "  do-daemonize: no",
             '  username: ""', '  chroot: ""', f'  directory: "{workdir}"', '  pidfile: ""', "  use-syslog: no",
             '  logfile: ""', "  verbosity: 0", '  module-config: "iterator"', "  num-threads: 1", "  do-ip6: no",
             "  access-control: 0.0.0.0/0 allow", '  local-zone: "." static',
             *[f'  local-data: "{name}. 300 IN A {addr}"' for name, addr in rules],
             "remote-control:", "  control-enable: no"]
    conf.write_text("\n".join(lines) + "\n")
    log = workdir / "unbound.log"
    with open(log, "ab") as out:
        proc = topo.popen("mep", ["taskset", "-c", str(RESPONDER_CPU), "unbound", "-d", "-c", str(conf)],
                          stdout=out, stderr=subprocess.STDOUT)
    responder = Responder("unbound", UNBOUND_PORT, proc, log)
    wait_for("unbound", lambda: rules[-1][1] in kdig(topo, UNBOUND_PORT, rules[-1][0], "A"), responder)
    return responder


@dataclass
class Run:
    sent: int
    completed: int
    lost: int
    seconds: float
    rcodes: str
    latencies_s: list[float]


def dnsperf(topo: Topology, port: int, queries: Path, *, seconds: Optional[float], rate: Optional[int],
            passes: Optional[int] = None) -> tuple[Run, float]:
    """One dnsperf run from the upf namespace on the generator CPU; (its result, its CPU-seconds)."""
    argv = ["taskset", "-c", str(GENERATOR_CPU), "dnsperf", "-s", ADDR.mep_n6, "-p", str(port),
            "-d", str(queries), "-c", "8", "-T", "1", "-q", "200", "-t", "2", "-v"]
    if seconds is not None:
        argv += ["-l", str(seconds)]
    if passes is not None:
        argv += ["-n", str(passes)]
    if rate is not None:
        argv += ["-Q", str(rate)]
    out_path = queries.with_suffix(".out")
    with open(out_path, "wb") as out:
        proc = topo.popen("upf", argv, stdout=out, stderr=subprocess.STDOUT)
        # wait4 (not Popen.wait) for the child's own CPU time; dnsperf ends by itself (-l or -n).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    text = out_path.read_text(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"dnsperf failed:\n{text[-2000:]}")
    return parse_dnsperf(text), usage.ru_utime + usage.ru_stime


def parse_dnsperf(text: str) -> Run:
    """dnsperf's summary and the latency of every answer (-v lines: "> NOERROR name type latency")."""
    values: dict[str, str] = {}
    latencies = []
    for line in text.splitlines():
        if line.startswith("> "):
            parts = line.split()
            try:
                latencies.append(float(parts[-1]))
            except ValueError:
                continue
        elif ":" in line:
            key, _, value = line.strip().partition(":")
            values.setdefault(key, value.strip())
    return Run(sent=int(values["Queries sent"]), completed=int(values["Queries completed"].split()[0]),
               lost=int(values["Queries lost"].split()[0]), seconds=float(values["Run time (s)"]),
               rcodes=values.get("Response codes", ""), latencies_s=latencies)


def xdp_answers(admin: AdminClient) -> tuple[int, int]:
    """(answers the XDP program counted over all DNS rules and NODATA, queries its user-space listener saw)."""
    stats = admin.get("/stats")
    answered = stats["reasons"].get("TX_DNS_ANSWER", {}).get("packets", 0)
    return answered, sum(stats["dns"]["queries"].values())


def check(topo: Topology, responder: Responder, rules: list[tuple[str, str]], queries: Path, count: int) -> None:
    """The answers are right before anything is timed: kdig, then one pass of N queries, N answered NOERROR;
    for the XDP responder, every one of them answered by the program."""
    name, addr = rules[0]
    a, aaaa = kdig(topo, responder.port, name, "A"), kdig(topo, responder.port, name, "AAAA")
    if f"\t{addr}" not in a or "status: NOERROR" not in aaaa or "ANSWER: 0" not in aaaa:
        raise RuntimeError(f"{responder.name} answers wrongly:\n{a}\n{aaaa}")
    before = xdp_answers(responder.admin) if responder.name == "xdp" and responder.admin else None
    run, _ = dnsperf(topo, responder.port, queries, seconds=None, rate=None, passes=1)
    if (run.sent, run.completed) != (count, count) or run.rcodes != f"NOERROR {count} (100.00%)":
        raise RuntimeError(f"{responder.name}: {run.sent} sent, {run.completed} completed, codes {run.rcodes}")
    if before is not None and responder.admin is not None:
        after = xdp_answers(responder.admin)
        if (after[0] - before[0], after[1] - before[1]) != (count, 0):
            raise RuntimeError(f"xdp: the program answered {after[0] - before[0]} of {count} queries, "
                               f"user space {after[1] - before[1]}: the XDP path is not what is measured")


# Kernel symbols that are the XDP responder's own work: its programs (JIT-ed, named bpf_prog_<tag>_<name>),
# the hash-map lookup of the question, and the helper that copies the name out of the frame.
_BPF_SYMBOLS = ("bpf_prog_", "htab_map_hash", "lookup_nulls_elem_raw", "bpf_xdp_load_bytes", "__htab_map_lookup_elem")


def napi_profile(topo: Topology, responder: Responder, napi: int, queries: Path, seconds: float) -> dict[str, float]:
    """One more untimed dnsperf run at max, with perf sampling the NAPI thread ``napi``: the share of its
    samples per kernel symbol (perf report, no children)."""
    perf_data = queries.with_suffix(".perf")
    perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-t", str(napi), "-o", str(perf_data),
                             "--", "sleep", str(max(seconds - 1, 1))], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    dnsperf(topo, responder.port, queries, seconds=seconds, rate=None)
    perf.wait()
    out = subprocess.run(["perf", "report", "-q", "--stdio", "--no-children", "--sort", "sym", "-g", "none",
                          "-i", str(perf_data)], capture_output=True, text=True, check=True).stdout
    perf_data.unlink(missing_ok=True)
    shares: dict[str, float] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].endswith("%"):
            shares[parts[-1]] = shares.get(parts[-1], 0.0) + float(parts[0].rstrip("%"))
    return shares


def background_util() -> float:
    """Busy CPU-seconds per second of all CPUs over one idle second: load that is not this benchmark's."""
    before = sum(busy_per_cpu())
    time.sleep(1.0)
    return sum(busy_per_cpu()) - before


def limit_of(rate: Optional[int], qps: float, generator_util: float, responder_util: float,
             background: float) -> str:
    """What held the answered rate (the module docstring's "limit")."""
    if rate is not None and qps >= 0.98 * rate:
        return "offered rate"
    if responder_util >= 0.9:
        return "responder"
    if background >= 0.3:
        return "shared CPUs"
    if generator_util >= 0.9:
        return "generator"
    return "200 outstanding"


def measure(topo: Topology, responder: Responder, queries: Path, seconds: float, rate: Optional[int]) -> dict[str, Any]:
    """One row: dnsperf at ``rate`` for ``seconds``, with the CPU each side spent."""
    background = background_util()
    cpu0, busy0 = responder.cpu(), busy_per_cpu()
    run, generator_cpu = dnsperf(topo, responder.port, queries, seconds=seconds, rate=rate)
    cpu, busy = responder.cpu() - cpu0, [b - a for a, b in zip(busy0, busy_per_cpu())]
    answered_m = run.completed / 1e6
    lat = run.latencies_s
    generator_util, responder_util = generator_cpu / run.seconds, cpu / run.seconds
    limit = limit_of(rate, run.completed / run.seconds, generator_util, responder_util, background)
    return {
        "responder": responder.name, "offered_qps": rate or "max", "seconds": round(run.seconds, 2),
        "sent": run.sent, "answered": run.completed, "lost": run.lost,
        "qps": round(run.completed / run.seconds), "p50_ms": round(percentile(lat, 50) * 1e3, 3),
        "p99_ms": round(percentile(lat, 99) * 1e3, 3), "p999_ms": round(percentile(lat, 99.9) * 1e3, 3),
        "responder_cpu_s_per_m": round(cpu / answered_m, 2) if answered_m else "",
        "busy_cpu_s_per_m": round(sum(busy) / answered_m, 2) if answered_m else "",
        "generator_util": round(generator_util, 2), "responder_util": round(responder_util, 2),
        "background_util": round(background, 2), "limit": limit,
    }


def query_cost(rules: list[tuple[str, str]], calls: int) -> Report:
    """The dns_responders_query_cost report: ns per answered query in BPF_PROG_TEST_RUN and in Responder.respond()."""
    from bcc import BPF
    from scapy.layers.dns import DNS, DNSQR
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    from mep.config import Capacity, Config, DataplaneConfig, DnsConfig
    from mep.dataplane.compiler import StaticResolver, compile_ruleset
    from mep.dataplane.links import in_netns
    from mep.dataplane.reasons import Reason
    from mep.dataplane.testrun import prog_test_run
    from mep.dataplane.xdp import XdpEngine
    from mep.dns import Responder as DnsResponder
    from mep.models import DnsRule
    from mep.state.lifecycle import AppState
    from mep.state.records import AppInstance, Snapshot, StoredDnsRule
    from tests.fixtures.netns import make_ports_netns, remove_netns

    report = Report(
        "dns_responders_query_cost", "What does one answered DNS query cost in the XDP program, and in the user-space "
        "responder's handler?", __doc__.split("\n\n")[2].replace("\n", " "),
        ["path", "calls", "mean_ns", "median_ns", "floor_ns", "net_mean_ns", "net_median_ns"])
    listen = DnsConfig(enabled=True, listen=f"{ADDR.mep_n6}:53")
    config = Config(instance=f"dnscost-{os.getpid()}", dns=listen, dataplane=DataplaneConfig(
        ports=[{"name": "n6", "ifname": "n6", "role": "n6", "mac": ADDR.mep_n6_mac}],
        capacity=Capacity(dns_names=max(len(rules), 1)), pin_root=Path(f"/sys/fs/bpf/mep-dnscost-{os.getpid()}")))
    stored = tuple(StoredDnsRule(app_instance_id="bench", rule_id=1 + i, rule=DnsRule.model_validate(
        {"dnsRuleId": f"d{i}", "domainName": n, "ipAddressType": "IP_V4", "ipAddress": addr, "ttl": 300,
         "state": "ACTIVE"})) for i, (n, addr) in enumerate(rules))
    snap = Snapshot(revision=1, apps={"bench": AppInstance(appInstanceId="bench", state=AppState.READY)},
                    traffic_rules=(), dns_rules=stored)
    rs = compile_ruleset(snap, config=config.dataplane, resolver=StaticResolver.from_config(config.dataplane),
                         generation=1)
    name = rules[len(rules) // 2][0]
    payload = DNS(id=0x4d45, rd=1, qd=DNSQR(qname=name, qtype="A"))
    frame = bytes(Ether(src=ADDR.upf_n6_mac, dst=ADDR.mep_n6_mac) / IP(src=ADDR.ue1, dst=ADDR.mep_n6)
                  / UDP(sport=33333, dport=53) / payload)
    rule_id = 1 + len(rules) // 2

    ns = make_ports_netns(f"mep-dnscost-{uuid.uuid4().hex[:6]}")
    engine = None
    try:
        progress("loading the XDP program for the per-query cost")
        engine = XdpEngine(config, netns=ns)
        engine.apply(rs)
        result = engine.process(frame, 1)
        if result.reason is not Reason.TX_DNS_ANSWER:
            raise RuntimeError(f"the XDP program did not answer the query: {result}")
        floor_bpf = BPF(text=b"#include <uapi/linux/bpf.h>\nint mep_floor(struct xdp_md *ctx) { return XDP_TX; }")
        floor_fd = floor_bpf.load_func(b"mep_floor", BPF.XDP).fd
        ifindex = engine._port_ifindex[1]

        def timed(fd: int) -> list[int]:
            with in_netns(ns):
                return [prog_test_run(fd, frame, ingress_ifindex=ifindex).duration_ns for _ in range(calls)]

        with pinned_cpu(RESPONDER_CPU):
            progress(f"{calls} single test runs of the XDP_TX floor and of the MEP program")
            floor = timed(floor_fd)
            answered0 = engine.counters().rules[rule_id].packets
            took = timed(engine._xdp_fn.fd)
            answered = engine.counters().rules[rule_id].packets - answered0
            if answered != calls:
                raise RuntimeError(f"the program answered {answered} of {calls} timed queries")
            f_mean, f_med = statistics.fmean(floor), statistics.median(floor)
            mean, med = statistics.fmean(took), statistics.median(took)
            report.add(path="xdp (BPF_PROG_TEST_RUN)", calls=calls, mean_ns=round(mean), median_ns=round(med),
                       floor_ns=round(f_med), net_mean_ns=round(mean - f_mean), net_median_ns=round(med - f_med))

            responder = DnsResponder(listen)
            responder.update(rs.dns_rules)
            msg = bytes(payload)
            if not isinstance(responder.respond(msg, tcp=False), bytes):
                raise RuntimeError("the user-space responder did not answer the query")
            progress(f"{calls * 10} calls of Responder.respond()")
            per_call = []
            for _ in range(10):
                started = time.perf_counter_ns()
                for _ in range(calls):
                    responder.respond(msg, tcp=False)
                per_call.append((time.perf_counter_ns() - started) / calls)
            report.add(path="user space (Responder.respond, in process)", calls=calls * 10,
                       mean_ns=round(statistics.fmean(per_call)), median_ns=round(statistics.median(per_call)),
                       floor_ns="", net_mean_ns="", net_median_ns="")
    finally:
        if engine is not None:
            engine.detach(unpin=True)
            engine.close()
        shutil.rmtree(config.dataplane.pin_root, ignore_errors=True)
        remove_netns(ns)
    xdp_row, user_row = report.rows
    report.notes.append(f"the XDP program answers a query in {xdp_row['net_median_ns']} ns (median above the "
                        f"floor); the user-space handler alone takes {user_row['median_ns']} ns "
                        f"({user_row['median_ns'] / max(xdp_row['net_median_ns'], 1):.0f}x), before any socket work")
    report.notes.append("single runs carry each call's cold caches; the floor is timed the same way")
    return report


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--names", type=int, default=100, help="DNS rules (names), default 100")
    ap.add_argument("--seconds", type=float, default=10.0, help="dnsperf run time per row, default 10")
    ap.add_argument("--rates", default="5000,10000,20000,50000,max",
                    help="offered rates (queries/s) or max, comma-separated")
    ap.add_argument("--calls", type=int, default=20000, help="test runs for the per-query cost, default 20000")
    args = ap.parse_args(argv)
    rates = [None if r == "max" else int(r) for r in args.rates.split(",")]
    for tool in ("dnsperf", "kdig", "unbound", "taskset", "perf"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (scripts/setup.sh installs it)")
    rules = names(args.names)
    query_cost(rules, args.calls).write()
    print("dns_responders: dnsperf (upf ns, CPU 0) -> N6 veth -> responder (mep ns, CPU 1): "
          "the XDP responder, the user-space responder and unbound")
    report = Report(
        "dns_responders",
        "What does answering a DNS rule cost in the MEP's XDP responder and its user-space responder, "
        "against unbound serving the same names as local-data?",
        __doc__.split("\n\n")[1].replace("\n", " "),
        ["responder", "offered_qps", "seconds", "sent", "answered", "lost", "qps", "p50_ms", "p99_ms", "p999_ms",
         "responder_cpu_s_per_m", "busy_cpu_s_per_m", "generator_util", "responder_util",
         "background_util", "limit"])
    workdir = Path(tempfile.mkdtemp(prefix="mep-dnsbench-"))
    pin_root = Path(f"/sys/fs/bpf/mep-dnsbench-{os.getpid()}")
    queries = workdir / "queries.txt"
    queries.write_text("".join(f"{name} A\n{name} AAAA\n" for name, _ in rules))
    shares: dict[str, float] = {}
    with Topology() as topo:
        responders: list[Responder] = []
        try:
            xdp = start_mep(topo, workdir, rules, name="xdp", engine="xdp", port=XDP_PORT, pin_root=pin_root)
            responders.append(xdp)
            responders.append(start_mep(topo, workdir, rules, name="userspace", engine="reference", port=MEP_PORT,
                                        pin_root=pin_root))
            responders.append(start_unbound(topo, workdir, rules))
            napi = threaded_napi(topo.ns("mep"), "n6", RESPONDER_CPU)
            for responder in responders:
                responder.extra_pids.append(napi)
                check(topo, responder, rules, queries, 2 * len(rules))
            for rate in rates:  # the responders' rows alternate: all see the same background
                for responder in responders:
                    progress(f"{responder.name}, offered {rate or 'max'} qps, {args.seconds} s")
                    row = measure(topo, responder, queries, args.seconds, rate)
                    report.add(**row)
                    progress(f"  {row['qps']} qps, p99 {row['p99_ms']} ms, {row['responder_cpu_s_per_m']} "
                             f"responder CPU-s per M answers, limit: {row['limit']}")
            progress(f"xdp, offered max qps, {args.seconds} s, untimed: perf samples its NAPI thread")
            shares = napi_profile(topo, xdp, napi, queries, args.seconds)
        finally:
            for responder in responders:
                responder.stop()
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.rmtree(pin_root, ignore_errors=True)
    finish(report, args, shares)


def finish(report: Report, args: argparse.Namespace, shares: dict[str, float]) -> None:
    """Ratios, notes, CSV, PNG and markdown; ``shares``: the XDP responder's perf profile at max."""
    by = {(r["responder"], r["offered_qps"]): r for r in report.rows}
    for rate in dict.fromkeys(r["offered_qps"] for r in report.rows):
        unbound = by.get(("unbound", rate))
        if not unbound or not unbound["responder_cpu_s_per_m"]:
            continue
        parts = []
        for name in ("xdp", "userspace"):
            ours = by.get((name, rate))
            if ours and ours["responder_cpu_s_per_m"]:
                parts.append(f"{name} {ours['responder_cpu_s_per_m'] / unbound['responder_cpu_s_per_m']:.2f}x "
                             f"({ours['qps']} qps, p99 {ours['p99_ms']} ms)")
        report.notes.append(f"offered {rate}: responder CPU per answered query against unbound's "
                            f"({unbound['qps']} qps, p99 {unbound['p99_ms']} ms): " + ", ".join(parts))
    report.notes.append(f"{args.names} names, each asked A (answer) and AAAA (NODATA); dnsperf -c 8 -T 1 -q 200 -v")
    if any(r["limit"] == "generator" for r in report.rows):
        report.notes.append("where the limit is the generator, dnsperf's one core could not ask faster: that "
                            "responder's qps is a lower bound, and its CPU per answer is what to compare")
    if shares:
        own = sum(v for k, v in shares.items() if k.startswith(_BPF_SYMBOLS))
        top = ", ".join(f"{k} {v:.1f}%" for k, v in sorted(shares.items(), key=lambda kv: -kv[1])[:6])
        report.notes.append(f"where the XDP responder's CPU goes at max (perf, its NAPI thread): the MEP's BPF "
                            f"programs with their map lookups and name copy {own:.0f}%, the rest the veth driver "
                            f"and the kernel around it; top symbols: {top}")
    busiest = max((r["background_util"] for r in report.rows), default=0.0)
    if busiest >= 0.3:
        report.notes.append(f"other load shared the machine (background up to {busiest} cores): latency "
                            "percentiles include waiting for a CPU; CPU-seconds per answer are the "
                            "responders' own and hold up better")
    for row in report.rows:
        row["series"] = row["responder"]
    report.write(plot={"x": "qps", "y": "responder_cpu_s_per_m", "series": "series", "logy": True,
                       "title": "Responder CPU per answered query against answered queries per second",
                       "ylabel": "responder CPU-seconds per million answers"})
    results = Path(__file__).resolve().parent / "results"
    print((results / "dns_responders_query_cost.md").read_text())
    print((results / "dns_responders.md").read_text())


if __name__ == "__main__":
    main()
