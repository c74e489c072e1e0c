"""A daemon in the test's own process, for the Mm5 tests that must reach inside it.

``running_daemon`` starts a real ``Daemon`` (real SQLite store, real compiler,
real Mm5 server on loopback) and closes it at the end, the way ``mep run``
does: ``serve()`` is not needed because ``start()`` leaves the compile loop
running. Tests choose the engine (a reference engine with a full map, to
make an apply fail after the compiler accepted the rule set) and, when they
must see Mm5 alone, a daemon built with the Mm5 service only.
"""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import mep.daemon
from mep.config import Config
from mep.daemon import Daemon, Service
from mep.dataplane.engine import Engine
from mep.dataplane.reference import ReferenceEngine
from mep.dataplane.ruleset import CompiledRuleSet
from mep.errors import MapWriteError
from mep.mm5.client import Mm5Client
from mep.mm5.service import Mm5Service
from tests.fixtures.etcd import free_port
from tests.packets import PORTS

__all__ = ["daemon_config", "running_daemon", "FullMapEngine", "mm5_only"]


def daemon_config(workdir: Path, *, port: int | None = None, **sections: Any) -> Config:
    """A daemon configuration under ``workdir``: reference engine, SQLite, Mm5 on loopback."""
    data: dict[str, Any] = {
        "instance": "inproc",
        "log": {"level": "info", "format": "text"},
        "store": {"sqlite": {"path": str(workdir / "state" / "mep.db")}},
        "dataplane": {"engine": "reference", "apply_batch_ms": 1, "ports": PORTS},
        "mp1": {"enabled": False},
        "mm5": {"listen": f"127.0.0.1:{port or free_port()}"},
        "apps": {"confirm_ready_required": False, "graceful_timeout_s": 1},
        "admin": {"socket": str(workdir / "admin.sock")},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return Config(**data)


class FullMapEngine(ReferenceEngine):
    """The reference engine with a rule map of ``size`` entries.

    A rule set with more rules fails to apply with MapWriteError, as the XDP
    engine's does when a BPF map is full, after the compiler (whose capacity
    is larger) accepted it: the data-plane failure that only shows once a
    configuration is committed.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def apply(self, ruleset: CompiledRuleSet) -> None:
        if len(ruleset.rules) > self.size:
            raise MapWriteError(f"mep_rules is full: {len(ruleset.rules)} rules, {self.size} entries")
        super().apply(ruleset)


@contextlib.contextmanager
def mm5_only(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Daemons started inside the block host the Mm5 service only (no Mp1 app support, no admin API)."""

    def build(daemon: Daemon) -> list[Service]:
        return [Mm5Service(daemon)]

    with monkeypatch.context() as m:
        m.setattr(mep.daemon, "build_services", build)
        yield


@contextlib.asynccontextmanager
async def running_daemon(config: Config, engine: Engine | None = None) -> AsyncIterator[tuple[Daemon, Mm5Client]]:
    """A started daemon and a plaintext Mm5 client of it; both closed at the end."""
    daemon = Daemon(config, engine=engine)
    try:
        await daemon.start()
        async with Mm5Client(config.mm5.listen) as client:
            yield daemon, client
    finally:
        await daemon.close()
