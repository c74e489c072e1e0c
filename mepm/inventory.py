"""What MEPM knows: hosts (MEPs), apps with their desired state, and what it last saw of each instance.

Documents in the desired-state store (mepm/store.py)::

    hosts/<host>          Host: Mm5 address, TLS files
    apps/<app>            App: AppD, desired state (INSTANTIATED / TERMINATED), generation, and per
                          host the instance: app instance id, Mp1 client id and secret hash
    status/<app>/<host>   Status: the instance as the last reconciliation found it

``generation`` is the version of the app's configuration: 1 when first
instantiated, one more for every ``mepm app update``. A MEP whose instance
holds a lower one is behind and gets the configuration again.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mep.errors import Conflict, InvalidInput, NotFound, StoreUnavailable
from mep.mm5.client import ClientTls, Mm5Client
from mep.mm5.rpc import pb

from .appd import AppDescriptor
from .store import DesiredStore, Entry

__all__ = ["NAME_PATTERN", "HostTls", "Host", "Instance", "App", "Status", "Inventory", "instance_config", "parse_host"]

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
Desired = Literal["INSTANTIATED", "TERMINATED"]


def _check_name(value: str, what: str) -> str:
    if not NAME_PATTERN.match(value):
        raise ValueError(f"a {what} name is 1-63 of a-z, 0-9, '_' or '-', starting with a letter or digit")
    return value


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HostTls(_Doc):
    """PEM files to reach a MEP over (m)TLS."""

    ca: Path
    cert: Optional[Path] = None
    key: Optional[Path] = None
    server_name: Optional[str] = None


class Host(_Doc):
    """One MEP: where its Mm5 listens and how to reach it."""

    name: str
    address: str  # host:port
    tls: Optional[HostTls] = None
    added_at: float = 0.0

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "host")

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"'{value}' is not host:port")
        return value

    def client(self, timeout_s: float) -> Mm5Client:
        """An Mm5 client of this MEP (close it, or use it as an async context manager)."""
        tls = None
        if self.tls is not None:
            tls = ClientTls(ca=self.tls.ca, cert=self.tls.cert, key=self.tls.key, server_name=self.tls.server_name)
        return Mm5Client(self.address, tls=tls, timeout_s=timeout_s)


class Instance(_Doc):
    """The app on one host: its instance id there and its Mp1 credentials (the secret only as a hash)."""

    host: str
    app_instance_id: str
    client_id: str
    client_secret_hash: str


class App(_Doc):
    """An app MEPM manages: its AppD and where it should run, in which state."""

    name: str
    appd: dict[str, object]  # AppDescriptor.document()
    source: str = ""  # the AppD file it came from, for messages
    generation: int = Field(ge=1)
    desired: Desired = "INSTANTIATED"
    instances: dict[str, Instance] = Field(default_factory=dict)  # by host
    created_at: float = 0.0
    updated_at: float = 0.0

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "app")

    @property
    def descriptor(self) -> AppDescriptor:
        """The AppD as a model."""
        return AppDescriptor.model_validate(self.appd)


class Status(_Doc):
    """An instance as the last reconciliation of its host saw it."""

    app: str
    host: str
    reachable: bool
    state: str = ""  # the MEP's lifecycle state; "" when unknown or gone
    config_generation: int = 0
    in_force: bool = False
    task_id: str = ""
    task_state: str = ""
    detail: str = ""  # what went wrong, or what it is waiting for
    ok: bool = False  # as desired: running the desired generation, or gone
    seen_at: float = 0.0


def instance_config(app: App, instance: Instance) -> pb.AppConfiguration:
    """The Mm5 configuration of one instance: the AppD's rules and services, the instance's credentials."""
    appd = app.descriptor
    msg = pb.AppConfiguration(
        traffic_rules=[json.dumps(r.to_json()) for r in appd.traffic_rules()],
        dns_rules=[json.dumps(r.to_json()) for r in appd.dns_rules()],
        services_produced=[json.dumps(s.to_json()) for s in appd.services()],
        services_required=[json.dumps(s.to_json()) for s in appd.required_services],
    )
    msg.credentials.client_id = instance.client_id
    msg.credentials.client_secret_hash = instance.client_secret_hash
    return msg


def _load(model: type[_Doc], entry: Entry) -> _Doc:
    try:
        return model.model_validate(entry.value)
    except ValidationError as exc:
        raise StoreUnavailable(f"MEPM store key {entry.key} is not a valid {model.__name__}: {exc}") from None


class Inventory:
    """Typed access to the desired-state store."""

    def __init__(self, store: DesiredStore) -> None:
        self.store = store

    # -- hosts ----------------------------------------------------------------------------
    async def hosts(self) -> list[Host]:
        """Every host, by name."""
        return [h for h in (_load(Host, e) for e in await self.store.list("hosts/")) if isinstance(h, Host)]

    async def host(self, name: str) -> Host:
        """The host; NotFound naming the known ones."""
        entry = await self.store.get(f"hosts/{name}")
        if entry is None:
            known = ", ".join(h.name for h in await self.hosts()) or "none; add one with: mepm host add"
            raise NotFound(f"no host '{name}' (known: {known})", field="--host")
        host = _load(Host, entry)
        assert isinstance(host, Host)
        return host

    async def add_host(self, host: Host) -> Host:
        """Store a new host; Conflict if the name is taken."""
        host = host.model_copy(update={"added_at": time.time()})
        try:
            await self.store.put(f"hosts/{host.name}", host.model_dump(mode="json"), expected=0)
        except Conflict:
            raise Conflict(f"host '{host.name}' exists already (mepm host remove it first)", field="name") from None
        return host

    async def remove_host(self, name: str) -> None:
        """Forget a host no app has an instance on; NotFound, or Conflict naming the apps."""
        await self.host(name)
        users = [a.name for a in await self.apps() if name in a.instances]
        if users:
            raise Conflict(f"host '{name}' runs {', '.join(users)}; terminate them first", field="name")
        await self.store.delete(f"hosts/{name}", expected=None)

    # -- apps -------------------------------------------------------------------------------
    async def apps(self) -> list[App]:
        """Every app, by name."""
        return [a for a in (_load(App, e) for e in await self.store.list("apps/")) if isinstance(a, App)]

    async def app(self, name: str) -> tuple[App, int]:
        """The app and its document version; NotFound naming the known ones."""
        entry = await self.store.get(f"apps/{name}")
        if entry is None:
            known = ", ".join(a.name for a in await self.apps()) or "none"
            raise NotFound(f"no app '{name}' (known: {known})", field="name")
        app = _load(App, entry)
        assert isinstance(app, App)
        return app, entry.version

    async def put_app(self, app: App, *, expected: int) -> int:
        """Write the app if its document is still at ``expected`` (0: new); Conflict otherwise."""
        app = app.model_copy(update={"updated_at": time.time(), "created_at": app.created_at or time.time()})
        return await self.store.put(f"apps/{app.name}", app.model_dump(mode="json"), expected=expected)

    async def forget_app(self, name: str, *, expected: int) -> None:
        """Delete a terminated app and its statuses."""
        await self.store.delete(f"apps/{name}", expected=expected)
        for entry in await self.store.list(f"status/{name}/"):
            await self.store.delete(entry.key, expected=None)

    # -- status -----------------------------------------------------------------------------
    async def statuses(self, app: str | None = None) -> list[Status]:
        """What was last seen, of every instance or of one app's."""
        entries = await self.store.list(f"status/{app}/" if app else "status/")
        return [s for s in (_load(Status, e) for e in entries) if isinstance(s, Status)]

    async def put_status(self, status: Status) -> None:
        """Record what a reconciliation saw."""
        await self.store.put(f"status/{status.app}/{status.host}", status.model_dump(mode="json"), expected=None)


def parse_host(name: str, address: str, tls: HostTls | None) -> Host:
    """A Host from command-line values; InvalidInput naming the bad one."""
    try:
        return Host(name=name, address=address, tls=tls)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "host"
        raise InvalidInput(err["msg"].removeprefix("Value error, "), field=field) from None
