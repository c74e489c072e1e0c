"""``mep doctor``: can this machine run the MEP data plane? One line per check.

Each check prints ``OK``, ``FAIL`` (with the fix) or ``n/a`` (does not apply
to this configuration). The exit status is 0 only when no check failed.

Checks, in order: kernel version, BTF, kernel headers, bpffs, bcc (compile
and load the probe XDP program), BPF_PROG_TEST_RUN (run the probe on two
frames and check action and bytes), native and generic XDP attach on a veth
pair in a throw-away network namespace, and the configured store (etcd
reachable, or the SQLite file writable). Everything the checks create is
removed before they return, on failure too.

When a daemon answers on the admin socket, its engine and rule-set
generation are printed as well (information, never a failure).
"""
from __future__ import annotations

import asyncio
import os
import platform
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .admin import AdminClient
from .config import Config
from .dataplane.testrun import (
    PROBE_ETHERTYPE,
    XDP_ACTION_NAMES,
    XDP_FLAGS_DRV_MODE,
    XDP_FLAGS_SKB_MODE,
    XDP_PASS,
    XDP_TX,
    ProbeProgram,
    prog_test_run,
)
from .errors import MepError

__all__ = ["Check", "MIN_KERNEL", "run_checks", "format_check", "daemon_summary", "dataplane_report", "ebpf_source"]

# 5.15 is the oldest LTS kernel with everything the data plane uses: XDP
# attach through bpf_link (5.9), BPF_PROG_TEST_RUN with an xdp_md context
# (5.13), and native XDP on veth with redirect between veths.
MIN_KERNEL = (5, 15)

_BTF = Path("/sys/kernel/btf/vmlinux")
_BPFFS = Path("/sys/fs/bpf")
_XDP_ATTACHED_NAME = {XDP_FLAGS_DRV_MODE: "xdp", XDP_FLAGS_SKB_MODE: "xdpgeneric"}


@dataclass(frozen=True)
class Check:
    """The outcome of one check: ``ok`` None means it does not apply here."""

    name: str
    ok: bool | None
    detail: str
    fix: str = ""


def format_check(check: Check) -> str:
    """``OK   name   detail`` / ``FAIL name   detail; fix: ...`` / ``n/a  name   detail``."""
    status = "n/a " if check.ok is None else ("OK  " if check.ok else "FAIL")
    line = f"{status} {check.name:<14} {check.detail}"
    if check.ok is False and check.fix:
        line += f"; fix: {check.fix}"
    return line


def _kernel() -> Check:
    release = platform.release()
    parts = release.split(".")
    try:
        have = (int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0))
    except (IndexError, ValueError):
        return Check("kernel", False, f"cannot parse release {release!r}", "run a Linux kernel >= 5.15")
    need = ".".join(map(str, MIN_KERNEL))
    why = f"(>= {need}: XDP bpf_link attach, test-run with an xdp_md context)"
    if have >= MIN_KERNEL:
        return Check("kernel", True, f"{release} {why}")
    return Check("kernel", False, f"{release} is older than {need} {why}", f"boot a {need} or newer kernel (Debian 12 backports has 6.x)")


def _btf() -> Check:
    if _BTF.is_file():
        return Check("btf", True, f"{_BTF} ({_BTF.stat().st_size // 1024} KiB)")
    return Check("btf", False, f"{_BTF} is missing: no type information for maps and programs",
                 "use a kernel built with CONFIG_DEBUG_INFO_BTF=y")


def _headers() -> Check:
    build = Path("/lib/modules") / platform.release() / "build"
    if (build / "include").is_dir():
        return Check("kernel headers", True, f"{build} -> {build.resolve()}")
    return Check("kernel headers", False, f"{build}/include is missing: bcc compiles against it",
                 "make setup (links Debian's linux-headers), or apt-get install linux-headers-$(uname -r)")


def _bpffs() -> Check:
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError as exc:
        return Check("bpffs", False, f"cannot read /proc/mounts: {exc.strerror}", "mount /proc")
    if any(line.split()[1:3] == [str(_BPFFS), "bpf"] for line in mounts if len(line.split()) > 2):
        return Check("bpffs", True, f"{_BPFFS} mounted (maps are pinned under it)")
    return Check("bpffs", False, f"{_BPFFS} is not a bpf filesystem: maps cannot be pinned",
                 f"mount -t bpf bpf {_BPFFS}")


def _probe_frame(ethertype: int) -> bytes:
    dst, src = bytes.fromhex("020000000002"), bytes.fromhex("020000000001")
    return dst + src + ethertype.to_bytes(2, "big") + bytes(46)


def _test_run(probe: ProbeProgram) -> Check:
    frame = _probe_frame(PROBE_ETHERTYPE)
    try:
        tx = prog_test_run(probe.fd, frame, ingress_ifindex=1)  # lo exists in every namespace
        passed = prog_test_run(probe.fd, _probe_frame(0x0800))
    except MepError as exc:
        return Check("test-run", False, str(exc), "needs root (CAP_BPF and CAP_NET_ADMIN) and kernel >= 5.15")
    swapped = frame[6:12] + frame[0:6] + frame[12:]
    if tx.retval != XDP_TX or tx.output != swapped or passed.retval != XDP_PASS:
        got = f"{XDP_ACTION_NAMES.get(tx.retval, tx.retval)}/{XDP_ACTION_NAMES.get(passed.retval, passed.retval)}"
        return Check("test-run", False, f"probe returned {got}, expected XDP_TX/XDP_PASS with MACs swapped",
                     "report this kernel: BPF_PROG_TEST_RUN does not run XDP programs correctly")
    return Check("test-run", True, f"BPF_PROG_TEST_RUN: XDP_TX with MACs swapped, XDP_PASS ({tx.duration_ns} ns/run)")


@dataclass
class _Namespace:
    """A throw-away network namespace holding one veth pair, removed by ``remove()``."""

    name: str
    veth: tuple[str, str] = ("mepdoc0", "mepdoc1")

    def create(self) -> None:
        from pyroute2 import NetNS, netns

        netns.create(self.name)
        with NetNS(self.name) as ns:
            ns.link("add", ifname=self.veth[0], kind="veth", peer=self.veth[1])
            for ifname in self.veth:
                ns.link("set", index=ns.link_lookup(ifname=ifname)[0], state="up")

    def xdp_attached(self, ifname: str) -> str | None:
        """The kernel's name of the XDP mode attached to ``ifname`` (xdp, xdpgeneric), or None."""
        from pyroute2 import NetNS

        with NetNS(self.name) as ns:
            link = ns.get_links(ifname=ifname)[0]
            xdp = link.get_attr("IFLA_XDP")
            mode: str | None = xdp.get_attr("IFLA_XDP_ATTACHED") if xdp is not None else None
            return mode

    def inside(self, work: Callable[[], None]) -> None:
        """Run ``work`` in a thread that has entered the namespace (setns is per thread)."""
        from pyroute2 import netns

        error: list[BaseException] = []

        def target() -> None:
            netns.pushns(self.name)
            try:
                work()
            except BaseException as exc:  # handed to the caller's thread below
                error.append(exc)
            finally:
                netns.popns()

        thread = threading.Thread(target=target, name=f"netns-{self.name}")
        thread.start()
        thread.join()
        if error:
            raise error[0]

    def remove(self) -> None:
        from pyroute2 import netns

        if self.name in netns.listnetns():
            netns.remove(self.name)  # its veths, and the programs attached to them, go with it


def _attach(probe: ProbeProgram, ns: _Namespace, flags: int) -> Check:
    name = "xdp native" if flags == XDP_FLAGS_DRV_MODE else "xdp generic"
    ifname = ns.veth[0]
    expected = _XDP_ATTACHED_NAME[flags]
    try:
        ns.inside(lambda: probe.attach(ifname, flags))
        attached = ns.xdp_attached(ifname)
        ns.inside(lambda: probe.detach(ifname, flags))
        left = ns.xdp_attached(ifname)
    except Exception as exc:  # AttachError, or a netlink error while looking
        return Check(name, False, str(exc), "needs root; native mode needs driver support (veth has it since 4.19)")
    if attached != expected:
        return Check(name, False, f"attach on veth reported mode {attached!r}, expected {expected!r}",
                     "check dmesg for XDP errors on veth")
    if left not in (None, ""):
        return Check(name, False, f"detach left mode {left!r} on veth", "check dmesg for XDP errors on veth")
    return Check(name, True, f"attached, seen as {expected!r}, detached (veth in netns {ns.name})")


def _bpf_checks() -> Iterator[Check]:
    """bcc, test-run and attach checks; each later one needs the probe the first loads."""
    t0 = time.monotonic()
    try:
        probe = ProbeProgram.load()
    except MepError as exc:
        yield Check("bcc", False, str(exc), "apt-get install python3-bpfcc; run as root; see the error above")
        for name in ("test-run", "xdp native", "xdp generic"):
            yield Check(name, False, "not run: the probe program did not load", "fix the bcc check first")
        return
    try:
        yield Check("bcc", True, f"compiled and loaded the probe XDP program in {time.monotonic() - t0:.1f} s")
        yield _test_run(probe)
        ns = _Namespace(f"mep-doctor-{os.getpid()}")
        try:
            ns.create()
        except Exception as exc:  # pyroute2 raises NetlinkError/OSError with the kernel's reason
            for name in ("xdp native", "xdp generic"):
                yield Check(name, False, f"cannot create netns/veth: {exc}", "needs root and veth support (CONFIG_VETH)")
            ns.remove()
            return
        try:
            yield _attach(probe, ns, XDP_FLAGS_DRV_MODE)
            yield _attach(probe, ns, XDP_FLAGS_SKB_MODE)
        finally:
            ns.remove()
    finally:
        probe.close()


async def _etcd_status(host: str, port: int, timeout: float) -> str:
    import aetcd

    async with asyncio.timeout(timeout):
        async with aetcd.Client(host=host, port=port, timeout=int(timeout) or 1) as client:
            status = await client.status()
            return str(status.version)


def _etcd(config: Config) -> Check:
    etcd = config.store.etcd
    errors = []
    for endpoint in etcd.endpoints:
        host, _, port = endpoint.rpartition(":")
        try:
            version = asyncio.run(_etcd_status(host, int(port), etcd.timeout_s))
        except Exception as exc:  # grpc and timeout errors alike mean "not reachable"
            errors.append(f"{endpoint}: {exc or type(exc).__name__}")
            continue
        return Check("etcd", True, f"{endpoint} answers (etcd {version})")
    return Check("etcd", False, "no endpoint answers: " + "; ".join(errors), "start etcd, or fix store.etcd.endpoints")


def _store(config: Config) -> Iterator[Check]:
    store = config.store
    if store.backend == "etcd":
        yield _etcd(config)
        yield Check("sqlite", None, "(store.backend: etcd)")
        return
    yield Check("etcd", None, "(store.backend: sqlite)")
    path = store.sqlite.path
    # The store creates missing directories: the nearest existing one must be writable.
    existing = path if path.exists() else next(p for p in path.parents if p.exists())
    if existing != path and not existing.is_dir():
        yield Check("sqlite", False, f"{existing} is not a directory", "set store.sqlite.path to a writable place")
    elif os.statvfs(existing).f_flag & os.ST_RDONLY:
        yield Check("sqlite", False, f"{existing} is on a read-only filesystem", "set store.sqlite.path to a writable place")
    elif not os.access(existing, os.W_OK):
        yield Check("sqlite", False, f"{existing} is not writable by uid {os.getuid()}",
                    "run as root, or set store.sqlite.path to a writable place")
    else:
        what = "exists, writable" if path.exists() else f"can be created under {existing}"
        yield Check("sqlite", True, f"{path} {what}")


def run_checks(config: Config) -> Iterator[Check]:
    """Every check, in order, as it completes (so a slow one is visible)."""
    yield _kernel()
    yield _btf()
    yield _headers()
    yield _bpffs()
    yield from _bpf_checks()
    yield from _store(config)


def dataplane_report(config: Config) -> list[str]:
    """The running data plane in detail: XDP mode per port, capacity, map memory, pins, reason counters."""
    client = AdminClient(config.admin_socket, timeout=2.0)
    try:
        engine = client.get("/status").get("engine", {})
        stats = client.get("/stats")
    except MepError:
        return [f"data plane: no daemon answers on {config.admin_socket}"]
    lines = [f"engine {engine.get('engine')}, data-plane generation {engine.get('generation')}, "
             f"{engine.get('rules')} rules"]
    for port, mode in sorted((engine.get("xdp_modes") or {}).items()):
        lines.append(f"  xdp {port:<10} {mode}")
    if engine.get("capacity"):
        lines.append("  capacity " + ", ".join(f"{k} {v}" for k, v in engine["capacity"].items()))
    if engine.get("map_mib"):
        lines.append("  map memory (MiB) " + ", ".join(f"{k} {v}" for k, v in engine["map_mib"].items()))
    if engine.get("pin_dir"):
        lines.append(f"  maps pinned under {engine['pin_dir']}")
    for reason, (packets, nbytes) in sorted((stats.get("reasons") or {}).items()):
        lines.append(f"  {reason:<24} {packets:>12} packets {nbytes:>14} bytes")
    return lines


def ebpf_source(config: Config) -> tuple[list[str], str]:
    """The cflags and the exact C text the XDP engine compiles for ``config``."""
    from .dataplane.maps.abi import Sizes, cflags
    from .dataplane.xdp import program_text

    dp = config.dataplane
    sizes = Sizes.from_capacity(dp.capacity, fib_forward=dp.fib_forward)
    return cflags(sizes, dp.pin_root / config.instance), program_text()


def daemon_summary(config: Config) -> str | None:
    """One line about the running daemon, or None when none answers."""
    try:
        status = AdminClient(config.admin_socket, timeout=2.0).get("/status")
    except MepError:
        return None
    engine = status.get("engine", {})
    return (
        f"daemon: {config.instance} pid {status.get('pid')}, engine {engine.get('engine')}, "
        f"generation {status.get('generation')}, store revision {status.get('store', {}).get('revision')}"
    )
