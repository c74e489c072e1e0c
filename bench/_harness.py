"""Shared pieces of every benchmark: timers, test-run loops, result writers.

Each benchmark in bench/ answers one question, runs its baseline in the same
run, checks verdicts and output bytes before timing anything, and writes
``bench/results/<name>.csv`` (raw rows), ``<name>.png`` (a plot) and
``<name>.md`` (method, machine, table, ratios). ``python -m bench`` runs
them all and assembles ``summary.md``.
"""
from __future__ import annotations

import contextlib
import csv
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

RESULTS = Path(__file__).resolve().parent / "results"

__all__ = [
    "RESULTS",
    "Report",
    "machine",
    "rcu_expedited",
    "pinned_cpu",
    "percentile",
    "progress",
    "cpu_seconds",
]


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "kernel": platform.release(),
        "cpu": cpu,
        "cpus": str(os.cpu_count()),
        "python": platform.python_version(),
    }


@contextlib.contextmanager
def kernel_setting(path: str, value: str) -> Iterator[None]:
    """Write ``value`` to ``path`` (/proc/sys or /sys) for the block; the previous value is restored."""
    file = Path(path)
    old = file.read_text().strip()
    file.write_text(value)
    try:
        yield
    finally:
        file.write_text(old)


def rcu_expedited() -> contextlib.AbstractContextManager[None]:
    """Make BPF_PROG_TEST_RUN with repeat > 1 cheap (0.15 ms instead of ~18 ms per call) for the run.

    The kernel waits for RCU twice per repeated test run; expedited grace
    periods shorten that.
    """
    return kernel_setting("/sys/kernel/rcu_expedited", "1")


@contextlib.contextmanager
def pinned_cpu(cpu: Optional[int] = None) -> Iterator[None]:
    """Run the block on one CPU, ``cpu`` or the lowest this process may use (less noise from migrations;
    per-CPU maps, such as the XDP program's caches, filled and read by one sequence of runs)."""
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(old) if cpu is None else cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100), nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1)))))
    return ordered[k]


def progress(what: str) -> None:
    """One line of progress on stderr (benchmarks keep stdout for results)."""
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds consumed so far by processes ``pids`` (/proc/<pid>/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def napi_threads(ifname: str) -> set[int]:
    """Pids of the NAPI kernel threads of interfaces named ``ifname`` (comm "napi/<ifname>-<id>")."""
    found = set()
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().startswith(f"napi/{ifname}-"):
                found.add(int(comm.parent.name))
        except OSError:
            continue
    return found


def threaded_napi(netns: str, ifname: str, cpu: int, fifo: int = 0) -> int:
    """Turn on threaded NAPI for ``ifname`` in namespace ``netns``, pin its thread to ``cpu``; its pid.

    ``fifo`` > 0: the thread runs at that SCHED_FIFO priority (it preempts a generator sharing ``cpu``).
    """
    before = napi_threads(ifname)
    # `ip netns exec` mounts the namespace's own /sys, where its interfaces are.
    subprocess.run(["ip", "netns", "exec", netns, "sh", "-c", f"echo 1 > /sys/class/net/{ifname}/threaded"],
                   check=True)
    new = napi_threads(ifname) - before
    if len(new) != 1:
        raise RuntimeError(f"expected one new NAPI thread for {ifname}, found {sorted(new)}")
    (pid,) = new
    os.sched_setaffinity(pid, {cpu})
    if fifo:
        os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(fifo))
    return pid


@dataclass
class Report:
    """Rows of one benchmark, and the writers for CSV, PNG and markdown."""

    name: str
    question: str
    method: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, **row: Any) -> None:
        self.rows.append(row)

    def write(self, *, plot: Optional[dict[str, Any]] = None, plot_rows: Optional[list[dict[str, Any]]] = None) -> Path:
        """Write <name>.csv, <name>.md and (with ``plot``) <name>.png; returns the markdown path.

        ``plot_rows``: the rows to plot, when they are not the table's (several
        engines of one table row as separate series, say).
        """
        RESULTS.mkdir(parents=True, exist_ok=True)
        with open(RESULTS / f"{self.name}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(self.rows)
        if plot:
            self._plot(plot_rows if plot_rows is not None else self.rows, **plot)
        md = [f"# {self.name}", "", f"**Question.** {self.question}", "", f"**Method.** {self.method}", "",
              "**Machine.** " + ", ".join(f"{k} {v}" for k, v in machine().items()), "",
              "| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
        for row in self.rows:
            md.append("| " + " | ".join(_fmt(row.get(c, "")) for c in self.columns) + " |")
        if self.notes:
            md += ["", *[f"- {n}" for n in self.notes]]
        if plot:
            md += ["", f"![{self.name}]({self.name}.png)"]
        path = RESULTS / f"{self.name}.md"
        path.write_text("\n".join(md) + "\n")
        return path

    def _plot(self, rows: list[dict[str, Any]], *, x: str, y: str, series: str, title: str, logx: bool = False,
              logy: bool = False, ylabel: Optional[str] = None) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.5))
        for name in dict.fromkeys(r[series] for r in rows):
            pts = [(r[x], r[y]) for r in rows if r[series] == name and r.get(y) not in (None, "")]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=str(name))
        if logx:
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(ylabel or y)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(RESULTS / f"{self.name}.png", dpi=110)
        plt.close(fig)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run_quiet(argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, **kw)
