"""The ``mepm`` command: the lightweight MEC platform manager (orchestrator).

This build has no orchestration yet: ``mepm`` prints its usage and version.
MEPM itself (AppD parsing, hosts, app lifecycle over Mm5, reconciliation)
and the subcommands that drive it come in later issues.
"""
from __future__ import annotations

import argparse
import sys
from importlib.metadata import version
from typing import Sequence

__all__ = ["main", "build_parser"]

_LATER = """\
not in this build yet (later issues): creating, starting, stopping and
terminating MEC app instances on a MEP from an AppD, over Mm5 (gRPC), and
reconciling the MEP's state with MEPM's.
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``mepm`` argument parser: ``version`` only, for now."""
    parser = argparse.ArgumentParser(
        prog="mepm",
        description="MEC platform manager: deploys MEC apps to a MEP over Mm5 (gRPC).",
        epilog=_LATER + "\nexamples:\n  mepm version",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("version", help="print the version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mepm`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"mepm {version('mep')}")
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
