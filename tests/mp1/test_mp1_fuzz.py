"""Schema fuzzing (schemathesis) of a real ``mep run`` against both ETSI OpenAPI files.

The daemon runs as a process (SQLite store, reference engine, auth on); one
app instance is added through the admin API with a traffic rule and a DNS
rule, and every generated request carries its token. Path parameters naming
the app instance and its rules are pinned to those (random ones would all
end at 403/404 before any handler logic); subscription and service ids stay
random. Generated callbackReference values are pointed at a closed port on
loopback, so a notification never leaves the machine (its delivery fails,
which the fuzz run does not look at).

Two runs per API:

- **positive** (data valid per the schema): no 5xx, and every response
  conforms: a status the YAML lists for the operation, its media type and
  headers, and a body matching the schema of that status;
- **negative** (data the schema forbids): no 5xx, every answer a 4xx (the
  data is refused), with a conforming media type and body. Status-code
  conformance is not asked here: the YAML lists no 400 for confirm_ready and
  confirm_termination, although a malformed body gets one (docs/mp1.md).

Sized for CI: ``MP1_FUZZ_EXAMPLES`` examples per operation and mode (default
50: about 1,500 requests, half a minute here). The last test reads the
daemon's own request metrics: requests arrived, and not one got a 5xx.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from mep.admin import AdminClient, DaemonNotRunning
from mep.mp1 import ETSI_DIR
from tests.mp1.conftest import APP, config_data, dns_rule, traffic_rule
from tests.packets import APP1_IP

EXAMPLES = int(os.environ.get("MP1_FUZZ_EXAMPLES", "50"))
PINNED = {"appInstanceId": APP, "trafficRuleId": "r1", "dnsRuleId": "d1"}
CALLBACK = "http://127.0.0.1:9/cb"  # the discard port, closed: connection refused, on loopback


def _schema(name: str, mode: GenerationMode) -> Any:
    raw = yaml.safe_load((ETSI_DIR / name).read_text())
    # The YAML's POST .../services body is oneOf two bare objects: any object matches both, so nothing
    # satisfies it. Its description says what is meant: a ServiceInfo.
    post = raw["paths"].get("/applications/{appInstanceId}/services", {}).get("post")
    if post is not None:
        post["requestBody"]["content"]["application/json"]["schema"] = {"$ref": "#/components/schemas/ServiceInfo"}
    schema = schemathesis.openapi.from_dict(raw)
    schema.config.update(parameters=PINNED)
    schema.config.generation.update(modes=[mode], max_examples=EXAMPLES, deterministic=True)

    @schema.hook
    def map_body(context: Any, body: Any) -> Any:
        # Keep generated bodies about this platform's app: its rules and its callbacks on loopback.
        if isinstance(body, dict):
            for key, value in (("trafficRuleId", "r1"), ("dnsRuleId", "d1"), ("appInstanceId", APP)):
                if key in body and isinstance(body[key], str):
                    body[key] = value
            if isinstance(body.get("callbackReference"), str):
                body["callbackReference"] = CALLBACK
        return body

    return schema


APP_SUPPORT = _schema("MecAppSupportApi.yaml", GenerationMode.POSITIVE)
SERVICE_MGMT = _schema("MecServiceMgmtApi.yaml", GenerationMode.POSITIVE)


def _negatable(ctx: Any) -> bool:
    """Negative data needs something to negate: a body, or the service queries (path parameters are pinned)."""
    operation = ctx.operation
    return operation.method.upper() in ("POST", "PUT") or operation.path.endswith("/services")


APP_SUPPORT_NEGATIVE = _schema("MecAppSupportApi.yaml", GenerationMode.NEGATIVE).include(_negatable)
SERVICE_MGMT_NEGATIVE = _schema("MecServiceMgmtApi.yaml", GenerationMode.NEGATIVE).include(_negatable)
POSITIVE_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
                   response_headers_conformance, response_schema_conformance]
NEGATIVE_CHECKS = [not_a_server_error, negative_data_rejection, content_type_conformance, response_schema_conformance]
FUZZ_SETTINGS = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))
_Test = Callable[..., None]


def parametrize(schema: Any) -> Callable[[_Test], _Test]:
    """``schema.parametrize()``, typed: one test per operation of the schema."""
    decorator: Callable[[_Test], _Test] = schema.parametrize()
    return decorator


class Server:
    """The running ``mep run``: where Mp1 listens and the app's token."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("fuzz")
    data = config_data(tmp)
    port = free_port()
    data["mp1"]["listen"] = f"127.0.0.1:{port}"
    data["log"]["level"] = "warning"
    config = tmp / "mep.yaml"
    config.write_text(yaml.safe_dump(data))
    proc = subprocess.Popen([sys.executable, "-m", "mep.cli", "run", "-c", str(config)],
                            stdout=subprocess.DEVNULL, stderr=(tmp / "daemon.log").open("w"))
    try:
        admin = AdminClient(Path(data["admin"]["socket"]))
        deadline = time.monotonic() + 30
        while True:
            try:
                admin.get("/status")
                break
            except DaemonNotRunning:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp / "daemon.log").read_text()
                time.sleep(0.05)
        rule = traffic_rule("r1", dstInterface={"interfaceType": "IP", "dstIpAddress": APP1_IP})
        res = admin.post("/apps", {"app_instance_id": APP, "traffic_rules": [rule], "dns_rules": [dns_rule("d1")]})
        url = f"http://127.0.0.1:{port}"
        token = requests.post(f"{url}/oauth2/token", data={"grant_type": "client_credentials"},
                              auth=(res["client_id"], res["client_secret"]), timeout=10).json()["access_token"]
        yield Server(url, token)
    finally:
        proc.terminate()
        try:
            assert proc.wait(timeout=10) == 0, (tmp / "daemon.log").read_text()
        finally:
            proc.kill()


def free_port() -> int:
    """A free TCP port on loopback (bound and released: the daemon binds it next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@parametrize(APP_SUPPORT)
@FUZZ_SETTINGS
def test_mp1_app_support_positive(case: Any, server: Server) -> None:
    case.call_and_validate(base_url=server.url + "/mec_app_support/v1", headers=server.headers, checks=POSITIVE_CHECKS)


@parametrize(SERVICE_MGMT)
@FUZZ_SETTINGS
def test_mp1_service_mgmt_positive(case: Any, server: Server) -> None:
    case.call_and_validate(base_url=server.url + "/mec_service_mgmt/v1", headers=server.headers, checks=POSITIVE_CHECKS)


@parametrize(APP_SUPPORT_NEGATIVE)
@FUZZ_SETTINGS
def test_mp1_app_support_negative(case: Any, server: Server) -> None:
    case.call_and_validate(base_url=server.url + "/mec_app_support/v1", headers=server.headers, checks=NEGATIVE_CHECKS)


@parametrize(SERVICE_MGMT_NEGATIVE)
@FUZZ_SETTINGS
def test_mp1_service_mgmt_negative(case: Any, server: Server) -> None:
    case.call_and_validate(base_url=server.url + "/mec_service_mgmt/v1", headers=server.headers, checks=NEGATIVE_CHECKS)


def test_mp1_fuzz_reached_the_server_and_caused_no_server_error(server: Server) -> None:
    """Seen from the daemon (its request metrics): the runs above made requests, and none got a 5xx."""
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("mep_mp1_request_duration_seconds_count{"):
            labels, value = line.rsplit(" ", 1)
            status = labels.split('status="', 1)[1].split('"', 1)[0]
            counts[status] = counts.get(status, 0.0) + float(value)
    assert not {s: n for s, n in counts.items() if s.startswith("5")}, counts
    assert sum(counts.values()) >= EXAMPLES * 10, counts
    assert counts.get("200", 0) and counts.get("201", 0) and counts.get("400", 0), counts
