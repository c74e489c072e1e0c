"""MEPM's desired-state store: one contract, SQLite and etcd."""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from mep.errors import Conflict, InvalidInput, StoreUnavailable
from mepm.store import DesiredStore, EtcdDesired, SqliteDesired, open_desired
from tests.fixtures.etcd import delete_prefix, free_port


@pytest_asyncio.fixture(params=["sqlite", pytest.param("etcd", marks=pytest.mark.needs_etcd)])
async def desired(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DesiredStore]:
    if request.param == "sqlite":
        store: DesiredStore = open_desired(f"sqlite://{tmp_path}/mepm.db")
        assert isinstance(store, SqliteDesired)
        async with store:
            yield store
        return
    endpoint: str = request.getfixturevalue("etcd_endpoint")
    prefix = f"/mepm-test/{uuid.uuid4().hex}/"
    store = open_desired(f"etcd://{endpoint}{prefix}")
    assert isinstance(store, EtcdDesired)
    async with store:
        yield store
    delete_prefix(endpoint, prefix)


@pytest.mark.asyncio
async def test_documents_are_versioned_and_written_conditionally(desired: DesiredStore) -> None:
    assert await desired.get("apps/a") is None
    v1 = await desired.put("apps/a", {"n": 1}, expected=0)
    with pytest.raises(Conflict, match="apps/a is at version .*, not at version 0"):
        await desired.put("apps/a", {"n": 2}, expected=0)
    v2 = await desired.put("apps/a", {"n": 2}, expected=v1)
    assert v2 > v1
    with pytest.raises(Conflict):
        await desired.put("apps/a", {"n": 3}, expected=v1)
    entry = await desired.get("apps/a")
    assert entry is not None and (entry.value, entry.version) == ({"n": 2}, v2)
    await desired.put("apps/b", {"n": 0}, expected=None)
    await desired.put("hosts/x", {"h": 1}, expected=None)
    assert [e.key for e in await desired.list("apps/")] == ["apps/a", "apps/b"]
    with pytest.raises(Conflict):
        await desired.delete("apps/a", expected=v1)
    await desired.delete("apps/a", expected=v2)
    await desired.delete("apps/gone", expected=None)
    assert [e.key for e in await desired.list("")] == ["apps/b", "hosts/x"]


def test_store_urls() -> None:
    for bad in ("mysql://x", "sqlite://", "etcd://127.0.0.1:2379/", "etcd://host/prefix/"):
        with pytest.raises(InvalidInput) as info:
            open_desired(bad)
        assert info.value.field == "--store"


@pytest.mark.asyncio
async def test_an_unreachable_etcd_is_store_unavailable() -> None:
    with pytest.raises(StoreUnavailable, match="no etcd endpoint answered"):
        await open_desired(f"etcd://127.0.0.1:{free_port()}/mepm/").open()
