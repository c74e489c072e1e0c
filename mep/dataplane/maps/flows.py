"""Owner (from user space) of mep_flows, the reverse-flow state the XDP program writes.

The control plane only clears it (tests, ``flush_flows``); the program owns
its contents (ebpf/flow.h). The flow caches (mep_flow_cache, mep_flow_cache4)
are the program's alone: per-CPU, unpinned, keyed by the rule-set
generation, so every apply() retires their entries without a write from here.
"""
from __future__ import annotations

from typing import Any

__all__ = ["FlowMaps"]


class FlowMaps:
    def __init__(self, bpf: Any) -> None:
        self._flows = bpf["mep_flows"]

    def clear(self) -> None:
        self._flows.clear()
