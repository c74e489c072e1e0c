"""Fixtures of the Mm5 tests: one ``mep run`` per module (reference engine, SQLite) and a client of it."""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from mep.mm5.client import Mm5Client
from tests.fixtures.mep_daemon import MepProcess

# Small bounds, so the tests can reach them.
LIMITS = {"max_rules_per_app": 20, "max_streams": 3}


@pytest.fixture(scope="module")
def mep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MepProcess]:
    """A running daemon shared by the module's tests (each test uses its own app ids)."""
    proc = MepProcess(tmp_path_factory.mktemp("mep"), instance="mm5", overrides={"mm5": LIMITS})
    proc.start()
    yield proc
    proc.kill()


@pytest_asyncio.fixture
async def client(mep: MepProcess) -> AsyncIterator[Mm5Client]:
    """A plaintext Mm5 client of ``mep``."""
    async with Mm5Client(mep.target) as c:
        yield c
