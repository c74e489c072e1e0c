"""``python -m bench`` (``make bench``): run every benchmark in bench/ and write results/summary.md.

A benchmark is a module ``bench/<name>.py`` (not starting with ``_``) with a
module-level ``main()``; the modules are found by reading their source, so
listing needs neither root nor their imports. Each one runs in its own
process (``python -m bench.<name>``), one after the other, with its stderr
(progress) passed through prefixed with its name; it writes
``results/<name>.csv``, ``.png`` and ``.md`` itself (bench/_harness.py).

``--quick`` passes a benchmark's ``QUICK_ARGS`` (a module-level list of
argument strings, when it has one) for a short run; without it the
benchmark runs its defaults either way, and the summary says which.

``results/summary.md`` gathers, for every benchmark found (run now or
earlier): its question, method, this run's outcome and duration, the notes
of its report (where each states its ratios against its baseline), and its
plots. ``results/index.json`` remembers which result files each benchmark
wrote and when, so a partial run keeps the others' entries.

Examples:
    python -m bench                       # everything, full length
    python -m bench --quick               # everything, short runs
    python -m bench upf_gtpu swap_loss    # a subset
    python -m bench --list
"""
from __future__ import annotations

import argparse
import ast
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from ._harness import RESULTS, machine

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
INDEX = RESULTS / "index.json"
SUMMARY = RESULTS / "summary.md"
_TAIL_LINES = 30


@dataclass(frozen=True)
class Benchmark:
    """A module of bench/ with a main(): its name, first docstring line and quick arguments."""

    name: str
    title: str
    quick_args: Optional[tuple[str, ...]]


@dataclass
class Run:
    """One benchmark's run in this invocation."""

    bench: Benchmark
    args: list[str]
    code: int = 0
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)  # the end of its output, shown when it failed


def discover() -> list[Benchmark]:
    """Every bench/<name>.py with a module-level main(), sorted by name."""
    found = []
    for path in sorted(BENCH.glob("*.py")):
        if path.name.startswith("_"):
            continue
        tree = ast.parse(path.read_text(), str(path))
        if not any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
            continue
        quick: Optional[tuple[str, ...]] = None
        for node in tree.body:
            if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["QUICK_ARGS"]:
                quick = tuple(str(a) for a in ast.literal_eval(node.value))
            elif isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "QUICK_ARGS" and node.value:
                quick = tuple(str(a) for a in ast.literal_eval(node.value))
        doc = ast.get_docstring(tree) or path.stem
        found.append(Benchmark(path.stem, doc.strip().splitlines()[0], quick))
    return found


def _stamp() -> str:
    return time.strftime("%H:%M:%S")


def _owner(stem: str, names: Sequence[str]) -> Optional[str]:
    """The benchmark whose name ``stem`` starts with (the longest such name), if any."""
    owners = [n for n in names if stem == n or stem.startswith(n + "_")]
    return max(owners, key=len) if owners else None


def run_one(bench: Benchmark, position: str, quick: bool, timeout: float, names: Sequence[str]) -> Run:
    """Run one benchmark as a process; progress lines go to stderr as they come.

    Its result files are those written while it ran, except files named
    after another benchmark (someone else may run that one meanwhile).
    """
    args = list(bench.quick_args or ()) if quick else []
    run = Run(bench, args)
    how = ("quick: " + " ".join(args) if args else "quick: no QUICK_ARGS, its defaults") if quick else "defaults"
    print(f"[{_stamp()}] {position} {bench.name}: {bench.title} ({how})", file=sys.stderr, flush=True)
    started_wall, started = time.time(), time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", f"bench.{bench.name}", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=1)
    tail: list[str] = []

    def relay(stream: Any, show: bool) -> None:
        for line in stream:
            tail.append(line.rstrip("\n"))
            del tail[:-_TAIL_LINES]
            if show:
                print(f"    [{bench.name}] {line.rstrip()}", file=sys.stderr, flush=True)

    readers = [threading.Thread(target=relay, args=(proc.stdout, False), daemon=True),
               threading.Thread(target=relay, args=(proc.stderr, True), daemon=True)]
    for reader in readers:
        reader.start()
    try:
        run.code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        run.code = -9
        tail.append(f"(killed after {timeout:.0f} s)")
    for reader in readers:
        reader.join(timeout=5)
    run.seconds = time.monotonic() - started
    run.files = sorted(p.name for p in RESULTS.glob("*") if p.is_file() and p.stat().st_mtime >= started_wall
                       and p.name not in (SUMMARY.name, INDEX.name)
                       and _owner(p.stem, names) in (None, bench.name))
    run.tail = tail
    outcome = "done" if run.code == 0 else f"FAILED (exit {run.code})"
    print(f"[{_stamp()}] {position} {bench.name}: {outcome} in {run.seconds:.0f} s; wrote "
          f"{', '.join(run.files) or 'nothing'}", file=sys.stderr, flush=True)
    if run.code != 0:
        for line in tail[-10:]:
            print(f"    [{bench.name}] {line}", file=sys.stderr)
    return run


def _load_index() -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(INDEX.read_text())
        return data
    except (OSError, ValueError):
        return {}


def update_index(runs: list[Run], quick: bool) -> dict[str, Any]:
    """Record this invocation's runs in results/index.json; the whole index."""
    index = _load_index()
    when = datetime.datetime.now().isoformat(timespec="seconds")
    for run in runs:
        previous = index.get(run.bench.name, {})
        index[run.bench.name] = {
            "when": when, "exit": run.code, "seconds": round(run.seconds, 1), "quick": quick, "args": run.args,
            # a failed run may have written nothing: keep pointing at the last results there are
            "files": run.files or previous.get("files", []),
        }
    RESULTS.mkdir(parents=True, exist_ok=True)
    INDEX.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return index


def _report_parts(md: str) -> dict[str, Any]:
    """Question, method, notes and images of a report written by bench/_harness.py's Report."""
    parts: dict[str, Any] = {"question": "", "method": "", "notes": [], "images": []}
    for line in md.splitlines():
        if line.startswith("**Question.**"):
            parts["question"] = line.removeprefix("**Question.**").strip()
        elif line.startswith("**Method.**"):
            parts["method"] = line.removeprefix("**Method.**").strip().removeprefix("Method:").strip()
        elif line.startswith("- "):
            parts["notes"].append(line[2:])
        elif line.startswith("![") and "](" in line:
            parts["images"].append(line[line.index("](") + 2:line.rindex(")")])
    return parts


_RATIO = re.compile(r"(?<![\w.-])\d+(\.\d+)?x\b|\d%")


def _headline(notes: list[str], width: int = 160) -> str:
    """The first note stating a ratio (``2.1x``, ``64%``), else the first with a number; shortened."""
    pick = next((n for n in notes if _RATIO.search(n)), None) or next(
        (n for n in notes if any(c.isdigit() for c in n)), "")
    return pick if len(pick) <= width else pick[:width - 3].rstrip() + "..."


def _machine_lines() -> list[str]:
    info = machine()
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return [f"- **CPU:** {info['cpu']}, {info['cpus']} CPUs" + (f", {mem} memory" if mem else ""),
            f"- **Kernel:** {info['kernel']} ({platform.machine()})",
            f"- **Python:** {info['python']}; load average at the end "
            f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} (other work competes with every number)"]


def write_summary(benches: list[Benchmark], runs: list[Run], index: dict[str, Any], quick: bool) -> Path:
    """results/summary.md: every benchmark found, newest results first-hand from their reports."""
    now = {r.bench.name: r for r in runs}
    lines = ["# Benchmark summary", "",
             f"Written {datetime.datetime.now().isoformat(timespec='seconds')} by `python -m bench"
             f"{' --quick' if quick else ''}{' ' + ' '.join(now) if runs and len(runs) < len(benches) else ''}`. "
             "Each benchmark runs its baseline in the same run and states its ratio against it; "
             "the full tables and raw CSV are linked.", "", "## Machine", "", *_machine_lines(), "",
             "## Overview", "", "| benchmark | question | this run | headline |", "|---|---|---|---|"]
    sections: list[str] = []
    shown: set[str] = set()
    for bench in benches:
        entry = index.get(bench.name)
        md_path = RESULTS / f"{bench.name}.md"
        reports = [RESULTS / f for f in (entry or {}).get("files", []) if f.endswith(".md")] or (
            [md_path] if md_path.exists() else [])
        run = now.get(bench.name)
        if run is not None:
            state = f"{'ok' if run.code == 0 else f'FAILED (exit {run.code})'}, {run.seconds:.0f} s" + (
                ", quick" if quick else "")
        elif entry:
            state = f"not run now (last: {entry['when']}, exit {entry['exit']}{', quick' if entry.get('quick') else ''})"
        else:
            state = "not run yet" if not reports else "not run now (earlier results)"
        headline, body = "", [f"## {bench.name}", "", f"*{bench.title}*", "", f"This run: {state}.", ""]
        for report in reports:
            if not report.exists():
                continue
            parts = _report_parts(report.read_text())
            headline = headline or _headline(parts["notes"])
            body += [f"### [{report.stem}]({report.name})", ""]
            if parts["question"]:
                body += [f"**Question.** {parts['question']}", ""]
            if parts["method"]:
                body += [f"**Method.** {parts['method']}", ""]
            body += [f"- {n}" for n in parts["notes"]] + ([""] if parts["notes"] else [])
            body += [f"![{report.stem}]({img})" for img in parts["images"]] + ([""] if parts["images"] else [])
            csv = report.with_suffix(".csv")
            if csv.exists():
                body += [f"Raw rows: [{csv.name}]({csv.name}).", ""]
        if run is not None and run.code != 0:
            body += ["The end of its output:", "", "```", *run.tail[-_TAIL_LINES:], "```", ""]
        question = bench.title.replace("|", "\\|")
        lines.append(f"| [{bench.name}](#{bench.name}) | {question} | {state} | {headline.replace('|', '/')} |")
        sections += body
        shown.update(r.name for r in reports)
    others = sorted(p for p in RESULTS.glob("*.md") if p.name not in shown and p != SUMMARY)
    if others:
        sections += ["## Other reports", "", "Written by a benchmark not yet run through `python -m bench`:", ""]
        for report in others:
            parts = _report_parts(report.read_text())
            sections.append(f"- [{report.stem}]({report.name}): {parts['question'] or 'no question stated'}"
                            + (f" {_headline(parts['notes'])}" if parts["notes"] else ""))
        sections.append("")
    SUMMARY.write_text("\n".join(lines + [""] + sections).rstrip() + "\n")
    return SUMMARY


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m bench``; 0 if every benchmark run succeeded."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="examples:" + __doc__.split("Examples:")[1])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="short runs (each benchmark's QUICK_ARGS)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--skip", action="append", default=[], metavar="NAME", help="leave one out (repeat)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per benchmark (default 3600)")
    args = parser.parse_args(argv)
    benches = discover()
    if args.list:
        for b in benches:
            quick = " ".join(b.quick_args) if b.quick_args is not None else "(no QUICK_ARGS)"
            print(f"{b.name:<18} {b.title}\n{'':<18} quick: {quick}")
        return 0
    known = {b.name for b in benches}
    unknown = [n for n in [*args.names, *args.skip] if n not in known]
    if unknown:
        parser.error(f"no benchmark named {', '.join(unknown)}; --list shows them")
    chosen = [b for b in benches if (not args.names or b.name in args.names) and b.name not in args.skip]
    if os.geteuid() != 0:
        print("python -m bench: most benchmarks need root (namespaces, BPF); running anyway", file=sys.stderr)
    print(f"[{_stamp()}] {len(chosen)} benchmarks{' (quick)' if args.quick else ''}: "
          f"{', '.join(b.name for b in chosen)}", file=sys.stderr, flush=True)
    names = [b.name for b in benches]
    runs = [run_one(b, f"[{i}/{len(chosen)}]", args.quick, args.timeout, names) for i, b in enumerate(chosen, 1)]
    summary = write_summary(benches, runs, update_index(runs, args.quick), args.quick)
    failed = [r.bench.name for r in runs if r.code != 0]
    print(f"[{_stamp()}] summary: {summary}" + (f"; FAILED: {', '.join(failed)}" if failed else "; all done"),
          file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
