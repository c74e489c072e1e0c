"""Reader of mep_flows, mep_flow_cache and mep_flow_cache4, which the XDP program itself writes.

The control plane only counts and clears them (``mep doctor`` fill levels,
tests); the program owns their contents (ebpf/flow.h, ebpf/classify.h).
"""
from __future__ import annotations

from typing import Any

__all__ = ["FlowMaps"]


class FlowMaps:
    def __init__(self, bpf: Any) -> None:
        self._flows = bpf["mep_flows"]
        self._caches = (bpf["mep_flow_cache"], bpf["mep_flow_cache4"])

    def fill(self) -> dict[str, int]:
        """Entries in each table (a walk of the keys: O(entries))."""
        return {"flows": sum(1 for _ in self._flows.keys()),
                "flow_cache": sum(1 for cache in self._caches for _ in cache.keys())}

    def clear(self) -> None:
        self._flows.clear()
        for cache in self._caches:
            cache.clear()
