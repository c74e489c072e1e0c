"""The ``upf-sim`` command: the simulated gNB/UEs and UPF of the test topology.

This build has no simulator yet: ``upf-sim`` prints its usage and version.
The simulator (UEs and gNB sending GTP-U on N3, the UPF decapsulating to N6,
and the traffic generator) and its subcommands come in later issues.
"""
from __future__ import annotations

import argparse
import sys
from importlib.metadata import version
from typing import Sequence

__all__ = ["main", "build_parser"]

_LATER = """\
not in this build yet (later issues): the simulated gNB/UEs (GTP-U on N3),
the UPF between N3 and N6, and a traffic generator, all inside network
namespaces with addresses from 198.18.0.0/15 and 2001:db8::/32.
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``upf-sim`` argument parser: ``version`` only, for now."""
    parser = argparse.ArgumentParser(
        prog="upf-sim",
        description="Simulated 5G gNB/UEs and UPF (GTP-U N3 <-> N6) for the MEP's tests, demo and benchmarks.",
        epilog=_LATER + "\nexamples:\n  upf-sim version",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("version", help="print the version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``upf-sim`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"upf-sim {version('mep')}")
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
