"""The ``engine`` fixture: every case and property runs through every engine.

Engines are listed by name; one that cannot run on this machine is skipped
with the reason shown (never silently replaced by another engine).
"""
from __future__ import annotations

from typing import Callable

import pytest

from mep.config import Config, DataplaneConfig
from mep.dataplane.engine import Engine
from mep.dataplane.fastpath import FastpathEngine
from mep.dataplane.reference import ReferenceEngine
from tests.packets import PORTS

EngineFactory = Callable[[], Engine]


def fastpath_offline() -> FastpathEngine:
    """The Cython engine without I/O: process() runs the C pipeline on the given frame."""
    return FastpathEngine(Config(dataplane=DataplaneConfig(ports=PORTS)), io=False)


ENGINES: dict[str, EngineFactory] = {
    "reference": ReferenceEngine,
    "fastpath": fastpath_offline,
}


@pytest.fixture(params=sorted([*ENGINES, "xdp"]))
def engine_factory(request: pytest.FixtureRequest) -> EngineFactory:
    """A function returning a fresh engine: reference engines are built anew; the
    XDP engine is loaded once per session and has its flow state flushed."""
    if request.param == "xdp":
        engine = request.getfixturevalue("xdp_engine")

        def fresh_xdp() -> Engine:
            engine.flush_flows()
            return engine  # type: ignore[no-any-return]

        return fresh_xdp
    return ENGINES[request.param]
