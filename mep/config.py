"""Platform configuration: one YAML file plus environment overrides.

Precedence (highest first): ``MEP_*`` environment variables, the YAML file,
the defaults below. Nested keys use ``__`` in variable names:
``MEP_STORE__BACKEND=etcd``, ``MEP_DATAPLANE__CAPACITY__RULES=20000``.
Lists (``dataplane.ports``) are overridden as JSON: ``MEP_DATAPLANE__PORTS='[...]'``.

Every field is validated; ``mep config check FILE`` prints each error with
its dotted path and the reason. docs/configuration.md documents every key.
"""
from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .errors import ConfigError
from .models.service_mgmt import LocalityType
from .models.types import parse_ip, parse_mac

__all__ = [
    "Config",
    "LogConfig",
    "StoreConfig",
    "SqliteConfig",
    "EtcdConfig",
    "DataplaneConfig",
    "Capacity",
    "PortConfig",
    "PortRole",
    "TlsConfig",
    "Mp1Config",
    "Mp1NotificationsConfig",
    "Mm5Config",
    "DnsConfig",
    "AppsConfig",
    "AdminConfig",
    "load_config",
    "read_config_file",
    "explain_errors",
]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class SqliteConfig(_Section):
    path: Path = Path("/var/lib/mep/mep.db")


class EtcdConfig(_Section):
    endpoints: list[str] = Field(default_factory=lambda: ["127.0.0.1:2379"], min_length=1)
    prefix: str = "/mep/"
    timeout_s: float = Field(default=5.0, gt=0, le=60)

    @field_validator("endpoints")
    @classmethod
    def _host_port(cls, value: list[str]) -> list[str]:
        for ep in value:
            host, sep, port = ep.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"endpoint '{ep}' is not host:port")
        return value

    @field_validator("prefix")
    @classmethod
    def _slashes(cls, value: str) -> str:
        if not (value.startswith("/") and value.endswith("/")):
            raise ValueError("prefix must start and end with '/'")
        return value


class StoreConfig(_Section):
    backend: Literal["sqlite", "etcd"] = "sqlite"
    sqlite: SqliteConfig = SqliteConfig()
    etcd: EtcdConfig = EtcdConfig()


class EngineName(StrEnum):
    XDP = "xdp"
    FASTPATH = "fastpath"
    REFERENCE = "reference"


class Capacity(_Section):
    """Sizes the data plane is built for; a rule set that does not fit is refused."""

    # Defaults size the XDP classifier's tables at about 8 MiB; 10,000 rules
    # need filters 16384 and 15.8 MiB (docs/classifier.md, Memory). The
    # classifier's scans are verified once per 64 filters: at 32768 filters
    # the largest program verifies in about 278k of the kernel's
    # 1M-instruction budget.
    rules: int = Field(default=4_096, ge=1, le=65_536)
    filters: int = Field(default=8_192, ge=1, le=32_768)
    flows: int = Field(default=65_536, ge=1024, le=4_194_304)
    dns_names: int = Field(default=4_096, ge=1, le=1_048_576)


class PortRole(StrEnum):
    N6 = "n6"  # from the UPF: user traffic enters here
    DN = "dn"  # toward the data network
    APP = "app"  # a link to local MEC applications


class PortConfig(_Section):
    """One data-plane interface. ``ifname`` lives in the daemon's network namespace."""

    name: str
    ifname: str = Field(min_length=1, max_length=15)
    role: PortRole
    # Pinned values; when absent the netlink resolver reads them from the interface.
    mac: Optional[str] = None
    mtu: int = Field(default=1500, ge=68, le=65535)
    # Static neighbours behind this port (IP -> MAC), used to resolve
    # dstInterface IP addresses and tunnel endpoints without the kernel table.
    neighbours: dict[str, str] = Field(default_factory=dict, max_length=4096)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("port name must be 1-32 of a-z, 0-9, '_' or '-'")
        return value

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else parse_mac(value)

    @field_validator("neighbours")
    @classmethod
    def _neighbours(cls, value: dict[str, str]) -> dict[str, str]:
        for ip, mac in value.items():
            parse_ip(ip)
            parse_mac(mac)
        return value


class DataplaneConfig(_Section):
    engine: EngineName = EngineName.XDP
    xdp_mode: Literal["auto", "native", "generic"] = "auto"
    # How the fastpath engine receives (docs/fastpath.md): AF_XDP where a native XDP program
    # can hand it the port's frames, else an AF_PACKET ring ("auto"), or insist on one.
    fastpath_receive: Literal["auto", "af_xdp", "af_packet"] = "auto"
    default_action: Literal["PASSTHROUGH", "DROP"] = "PASSTHROUGH"
    # The XDP engine: frames with a PASS verdict (no rule, PASSTHROUGH, from an app) go to
    # their next hop from XDP where the kernel's FIB names a data-plane port and a resolved
    # neighbour, bypassing netfilter's forward hooks; else, and when false, through the
    # stack (docs/xdp.md, "Forwarding in XDP").
    fib_forward: bool = False
    capacity: Capacity = Capacity()
    ports: list[PortConfig] = Field(default_factory=list, max_length=64)
    # Store changes arriving within this window are compiled as one rule set. 0: the
    # loop still takes every change queued meanwhile (a compile's worth of them) at once.
    apply_batch_ms: float = Field(default=0.0, ge=0, le=1000)
    pin_root: Path = Path("/sys/fs/bpf/mep")
    # The network namespace the ports live in, when the daemon itself runs
    # elsewhere (its APIs listen in its own namespace); None: the daemon's own.
    netns: Optional[str] = Field(default=None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _unique_ports(self) -> "DataplaneConfig":
        for attr in ("name", "ifname"):
            seen: set[str] = set()
            for p in self.ports:
                v = getattr(p, attr)
                if v in seen:
                    raise ValueError(f"two ports have {attr} '{v}'")
                seen.add(v)
        if sum(p.role is PortRole.N6 for p in self.ports) > 1:
            raise ValueError("at most one port has role n6")
        return self


class TlsConfig(_Section):
    cert: Path
    key: Path
    ca: Optional[Path] = None  # set: clients must present a certificate signed by it (mTLS)


def _listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"'{value}' is not host:port")
    return value


ListenAddress = Annotated[str, AfterValidator(_listen)]


_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


class Mp1NotificationsConfig(_Section):
    """How Mp1 delivers notifications to the apps' callbackReference URIs."""

    timeout_s: float = Field(default=5.0, gt=0, le=60)  # per POST attempt, connect to last byte
    max_attempts: int = Field(default=5, ge=1, le=20)
    backoff_s: float = Field(default=1.0, ge=0, le=60)  # before the 2nd attempt; doubles each time
    max_backoff_s: float = Field(default=60.0, gt=0, le=3600)
    concurrency: int = Field(default=16, ge=1, le=256)  # POSTs in flight at once
    queue_size: int = Field(default=10_000, ge=1, le=1_000_000)  # deliveries pending at once; more are dropped
    # None: <state dir>/<instance>-notifications.jsonl (Config.notification_log_file).
    log_file: Optional[Path] = None
    log_entries: int = Field(default=1000, ge=10, le=100_000)  # finished deliveries kept (memory and file)


class Mp1Config(_Section):
    enabled: bool = True
    listen: ListenAddress = "127.0.0.1:8081"
    tls: Optional[TlsConfig] = None
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)
    token_ttl_s: int = Field(default=3600, ge=60, le=86_400)
    # HMAC key signing the access tokens; None: <state dir>/<instance>-mp1-token.key (Config.token_key_file).
    token_key_file: Optional[Path] = None
    # scopeOfLocality of a service registered without one (MEC 011: MEC_HOST when absent).
    scope_of_locality: LocalityType = LocalityType.MEC_HOST
    # NTP servers advertised in timing_caps: IP addresses or DNS names.
    ntp_servers: list[str] = Field(default_factory=list, max_length=16)
    metrics: bool = True  # serve GET /metrics (Prometheus) on the Mp1 listener
    notifications: Mp1NotificationsConfig = Mp1NotificationsConfig()

    @field_validator("ntp_servers")
    @classmethod
    def _ntp_servers(cls, value: list[str]) -> list[str]:
        for server in value:
            try:
                parse_ip(server)
            except ValueError:
                if not _HOSTNAME.match(server):
                    raise ValueError(f"'{server}' is neither an IP address nor a DNS name") from None
        return value


class Mm5Config(_Section):
    enabled: bool = True
    listen: ListenAddress = "127.0.0.1:50051"
    tls: Optional[TlsConfig] = None
    # Largest gRPC message either way; 1000 traffic rules are about 0.5 MiB of JSON.
    max_message_bytes: int = Field(default=4 << 20, ge=64 << 10, le=64 << 20)
    # Longest list in one ApplyConfiguration (traffic rules, DNS rules, services).
    max_rules_per_app: int = Field(default=4096, ge=1, le=65_536)
    # Watch and WatchTask streams open at once.
    max_streams: int = Field(default=64, ge=1, le=1024)
    # How long a configuration task waits for the data plane to take it in.
    apply_timeout_s: float = Field(default=30.0, gt=0, le=600)


def _ip_port(value: str) -> str:
    """``198.18.1.2:53`` or ``[2001:db8::53]:53``: an IP literal (never a name) and a port."""
    host, _, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"'{value}': write an IPv6 address in brackets, [2001:db8::53]:53")
    try:
        parse_ip(host)
    except ValueError:
        raise ValueError(f"'{value}' needs an IP address, not a name (the resolver cannot resolve itself)") from None
    return value


class DnsConfig(_Section):
    """The DNS-rule responder (mep/dns, docs/dns.md): UDP and TCP on ``listen``."""

    enabled: bool = False
    # The MEP's N6-side address (inside dataplane.netns when set); port 0: any free port.
    listen: Annotated[ListenAddress, AfterValidator(_ip_port)] = "127.0.0.1:5353"
    # Where queries no DNS rule answers go; None: they are REFUSED.
    upstream: Optional[Annotated[ListenAddress, AfterValidator(_ip_port)]] = None
    upstream_timeout_s: float = Field(default=2.0, gt=0, le=30)
    # Forwarded queries waiting for the upstream at once; one more is answered SERVFAIL.
    max_inflight: int = Field(default=1024, ge=1, le=65_536)
    # Upstream answers kept (LRU), each for its smallest TTL, at most cache_max_ttl_s; 0: no cache.
    cache_entries: int = Field(default=10_000, ge=0, le=1_000_000)
    cache_max_ttl_s: int = Field(default=3600, ge=1, le=86_400)
    # The EDNS UDP payload size offered to clients (RFC 9715 / DNS flag day 2020: 1232).
    udp_payload_bytes: int = Field(default=1232, ge=512, le=4096)
    tcp_connections: int = Field(default=256, ge=1, le=65_536)  # open at once; more are closed at accept
    tcp_idle_timeout_s: float = Field(default=10.0, gt=0, le=300)  # RFC 7766 section 6.2.3

    @field_validator("upstream")
    @classmethod
    def _upstream_port(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and value.rpartition(":")[2] == "0":
            raise ValueError("the upstream needs a port other than 0")
        return value


class AppsConfig(_Section):
    confirm_ready_required: bool = True
    graceful_timeout_s: int = Field(default=10, ge=0, le=3600)


class AdminConfig(_Section):
    """The daemon's local admin API (``mep status``, ``stats``, ``rules``, ``explain``)."""

    # A unix socket, never TCP: access is controlled by file permissions (0660).
    # None: /run/mep/<instance>.sock.
    socket: Optional[Path] = None

    @field_validator("socket")
    @classmethod
    def _sun_path(cls, value: Optional[Path]) -> Optional[Path]:
        # sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
        if value is not None and len(os.fsencode(value)) > 107:
            raise ValueError("a unix socket path is at most 107 bytes")
        return value


class Config(BaseSettings):
    """The whole daemon configuration."""

    model_config = SettingsConfigDict(
        env_prefix="MEP_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    instance: str = "mep"
    log: LogConfig = LogConfig()
    store: StoreConfig = StoreConfig()
    dataplane: DataplaneConfig = DataplaneConfig()
    mp1: Mp1Config = Mp1Config()
    mm5: Mm5Config = Mm5Config()
    dns: DnsConfig = DnsConfig()
    apps: AppsConfig = AppsConfig()
    admin: AdminConfig = AdminConfig()

    @property
    def admin_socket(self) -> Path:
        """Where the admin API listens: ``admin.socket`` or /run/mep/<instance>.sock."""
        return self.admin.socket or Path("/run/mep") / f"{self.instance}.sock"

    @property
    def state_dir(self) -> Path:
        """The directory of the platform's own files: the one holding ``store.sqlite.path``."""
        return self.store.sqlite.path.parent

    @property
    def token_key_file(self) -> Path:
        """``mp1.token_key_file`` or <state dir>/<instance>-mp1-token.key."""
        return self.mp1.token_key_file or self.state_dir / f"{self.instance}-mp1-token.key"

    @property
    def notification_log_file(self) -> Path:
        """``mp1.notifications.log_file`` or <state dir>/<instance>-notifications.jsonl."""
        return self.mp1.notifications.log_file or self.state_dir / f"{self.instance}-notifications.jsonl"

    @field_validator("instance")
    @classmethod
    def _instance(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("instance must be 1-32 of a-z, 0-9, '_' or '-' (it names the bpffs pin directory)")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file (passed as init kwargs), which beats defaults.
        return (env_settings, init_settings)


def read_config_file(path: Path) -> dict[str, Any]:
    """The YAML mapping in ``path``; ConfigError if unreadable, not YAML, or not a mapping."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", field=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return data


def explain_errors(exc: ValidationError) -> list[str]:
    """One line per error: dotted path, what is wrong, and the value given."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; docs/configuration.md lists every key)"
        given = err.get("input")
        shown = "" if isinstance(given, dict) or err["type"] == "missing" else f" (given: {given!r})"
        lines.append(f"{path}: {msg}{shown}")
    return lines


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate; raises ConfigError whose detail lists every problem."""
    data = read_config_file(Path(path)) if path else {}
    try:
        return Config(**data)
    except ValidationError as exc:
        where = f"{path}" if path else "configuration"
        raise ConfigError(f"{where} is invalid:\n  " + "\n  ".join(explain_errors(exc))) from None
