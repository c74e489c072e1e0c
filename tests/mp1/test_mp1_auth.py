"""Mp1 security: the OAuth2 token endpoint, signed bearer tokens scoped to one app, key persistence, TLS."""
from __future__ import annotations

import asyncio
import base64
import json
import ssl
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mep.admin import AdminClient
from mep.errors import ConfigError
from mep.mp1.auth import TokenIssuer, load_or_create_key
from mep.state import AppState
from tests.mp1.conftest import APP, AS, OTHER, SM, Platform, start_platform, traffic_rule, until
from tests.mp1.test_mp1_app_support import problem

pytestmark = pytest.mark.asyncio

RULES = f"{AS}/applications/{APP}/traffic_rules"


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


async def oauth_error(resp: Any, status: int, error: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body: dict[str, Any] = await resp.json()
    assert body["error"] == error and body["status"] == status and body["detail"]
    assert resp.headers["Cache-Control"] == "no-store"
    if status == 401:
        assert resp.headers["WWW-Authenticate"] == 'Basic realm="mep"'
    return body


# -- the token endpoint -------------------------------------------------------------------------


async def test_token_endpoint_client_credentials(platform: Platform) -> None:
    await platform.add_app()
    client_id, secret = platform.secrets[APP]
    post = platform.client.post
    resp = await post("/oauth2/token", data={"grant_type": "client_credentials"}, headers=basic(client_id, secret))
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600 and body["access_token"].count(".") == 2
    # client_secret_post (RFC 6749 2.3.1) works as well.
    resp = await post("/oauth2/token", data={"grant_type": "client_credentials", "client_id": client_id,
                                             "client_secret": secret})
    assert resp.status == 200
    token = (await resp.json())["access_token"]
    assert (await platform.client.get(RULES, headers={"Authorization": f"Bearer {token}"})).status == 200


async def test_token_endpoint_refusals(platform: Platform) -> None:
    await platform.add_app()
    client_id, secret = platform.secrets[APP]
    post = platform.client.post
    grant = {"grant_type": "client_credentials"}
    await oauth_error(await post("/oauth2/token", data=grant, headers=basic(client_id, secret + "x")), 401, "invalid_client")
    await oauth_error(await post("/oauth2/token", data=grant, headers=basic("nobody", secret)), 401, "invalid_client")
    await oauth_error(await post("/oauth2/token", data=grant), 401, "invalid_client")
    await oauth_error(await post("/oauth2/token", data=grant, headers={"Authorization": "Bearer x"}), 401, "invalid_client")
    await oauth_error(await post("/oauth2/token", data=grant, headers={"Authorization": "Basic !!!"}), 401, "invalid_client")
    await oauth_error(await post("/oauth2/token", data={}, headers=basic(client_id, secret)), 400, "invalid_request")
    await oauth_error(await post("/oauth2/token", data={"grant_type": "password"}, headers=basic(client_id, secret)),
                      400, "unsupported_grant_type")
    await oauth_error(await post("/oauth2/token", json=grant, headers=basic(client_id, secret)), 400, "invalid_request")
    both = {**grant, "client_id": client_id, "client_secret": secret}
    await oauth_error(await post("/oauth2/token", data=both, headers=basic(client_id, secret)), 400, "invalid_request")
    big = {**grant, "pad": "x" * 5000}
    await oauth_error(await post("/oauth2/token", data=big, headers=basic(client_id, secret)), 400, "invalid_request")


# -- bearer tokens --------------------------------------------------------------------------------


async def test_requests_without_a_usable_token_are_401_with_a_challenge(platform: Platform) -> None:
    await platform.add_app()
    token = platform.tokens[APP]
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged_payload = base64.urlsafe_b64encode(json.dumps({**claims, "sub": OTHER}).encode()).rstrip(b"=").decode()
    none_header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    cases: dict[str, str | None] = {
        "missing": None,
        "other scheme": "Basic abc",
        "empty": "Bearer ",
        "garbage": "Bearer not.a.token",
        "forged claims": f"Bearer {header}.{forged_payload}.{signature}",
        "alg none": f"Bearer {none_header}.{payload}.",
        "bad signature": f"Bearer {header}.{payload}.{signature[:-4]}AAAA",
        "huge": "Bearer " + "a" * 5000,
    }
    for name, value in cases.items():
        headers = {} if value is None else {"Authorization": value}
        for path in (RULES, f"{SM}/services", f"{AS}/timing/current_time"):
            resp = await platform.client.get(path, headers=headers)
            body = await problem(resp, 401)
            challenge = resp.headers["WWW-Authenticate"]
            assert challenge.startswith('Bearer realm="mep"'), name
            assert ("error=" in challenge) == (name not in ("missing", "other scheme", "empty")), name
            assert body["field"] == "Authorization"


async def test_expired_and_foreign_tokens_are_refused(platform: Platform) -> None:
    await platform.add_app()
    key = load_or_create_key(platform.daemon.config.token_key_file)
    app = platform.daemon.store.get_app(APP)
    past = TokenIssuer(key, ttl_s=60, issuer="mep:mp1test", store=platform.daemon.store, clock=lambda: time.time() - 120)
    resp = await platform.client.get(RULES, headers={"Authorization": f"Bearer {past.issue(app)}"})
    assert "expired" in (await problem(resp, 401))["detail"]
    elsewhere = TokenIssuer(key, ttl_s=60, issuer="mep:edge9", store=platform.daemon.store)
    resp = await platform.client.get(RULES, headers={"Authorization": f"Bearer {elsewhere.issue(app)}"})
    assert "another platform instance" in (await problem(resp, 401))["detail"]
    other_key = TokenIssuer(b"k" * 32, ttl_s=60, issuer="mep:mp1test", store=platform.daemon.store)
    resp = await platform.client.get(RULES, headers={"Authorization": f"Bearer {other_key.issue(app)}"})
    assert "signature" in (await problem(resp, 401))["detail"]


async def test_a_token_is_confined_to_its_app_instance(platform: Platform) -> None:
    await platform.add_app(traffic_rules=[traffic_rule("r1")])
    await platform.add_app(OTHER, traffic_rules=[traffic_rule("o1")])
    mine, theirs = f"{AS}/applications/{APP}", f"{AS}/applications/{OTHER}"
    assert (await platform.client.get(f"{mine}/traffic_rules", headers=platform.auth(APP))).status == 200
    assert (await platform.client.get(f"{theirs}/traffic_rules", headers=platform.auth(OTHER))).status == 200
    for method, path in (("GET", "traffic_rules/o1"), ("PUT", "traffic_rules/o1"), ("GET", "dns_rules"),
                         ("POST", "confirm_ready"), ("POST", "subscriptions"), ("DELETE", "subscriptions/x")):
        resp = await platform.client.request(method, f"{theirs}/{path}", json=traffic_rule("o1"), headers=platform.auth(APP))
        assert (await problem(resp, 403))["field"] == "appInstanceId", (method, path)
    resp = await platform.client.get(f"{SM}/applications/{OTHER}/services", headers=platform.auth(APP))
    await problem(resp, 403)
    # Platform-wide resources are open to every app.
    for path in (f"{SM}/services", f"{SM}/transports", f"{AS}/timing/timing_caps"):
        assert (await platform.client.get(path, headers=platform.auth(OTHER))).status == 200


async def test_new_credentials_revoke_the_old_ones_and_their_tokens(platform: Platform) -> None:
    await platform.add_app()
    old_id, old_secret = platform.secrets[APP]
    old_token = platform.tokens[APP]
    res = await asyncio.to_thread(platform.admin.post, f"/apps/{APP}/credentials", {})
    assert res["client_id"] != old_id and res["client_secret"] != old_secret
    assert "no longer valid" in (await problem(await platform.client.get(RULES, headers=platform.auth()), 401))["detail"]
    resp = await platform.client.post("/oauth2/token", data={"grant_type": "client_credentials"},
                                      headers=basic(old_id, old_secret))
    await oauth_error(resp, 401, "invalid_client")
    token = await platform.token(res["client_id"], res["client_secret"])
    assert token != old_token
    assert (await platform.client.get(RULES, headers={"Authorization": f"Bearer {token}"})).status == 200


async def test_a_terminated_app_gets_no_token_and_its_token_stops_working(platform: Platform) -> None:
    await platform.add_app(confirm_ready_required=False)
    await asyncio.to_thread(platform.admin.post, f"/apps/{APP}/terminate", {})
    await until(lambda: platform.daemon.store.get_app(APP).state is AppState.TERMINATED)
    await problem(await platform.client.get(RULES, headers=platform.auth()), 401)
    body = await oauth_error(await platform.client.post("/oauth2/token", data={"grant_type": "client_credentials"},
                                                        headers=basic(*platform.secrets[APP])), 401, "invalid_client")
    assert "terminated" in body["error_description"]


async def test_deleting_the_app_invalidates_its_tokens(platform: Platform) -> None:
    await platform.add_app()
    await platform.daemon.store.delete_app(APP)
    body = await problem(await platform.client.get(f"{SM}/services", headers=platform.auth()), 401)
    assert "no longer exists" in body["detail"]


# -- the signing key --------------------------------------------------------------------------------


async def test_tokens_survive_a_restart_with_the_persisted_key(tmp_path: Path) -> None:
    daemon, server = await start_platform(tmp_path)
    try:
        res = await asyncio.to_thread(
            AdminClient(daemon.config.admin_socket).post,
            "/apps", {"app_instance_id": APP})
        assert server.url is not None
        async with aiohttp.ClientSession() as session:
            resp = await session.post(server.url + "/oauth2/token", data={"grant_type": "client_credentials"},
                                      headers=basic(res["client_id"], res["client_secret"]))
            token = (await resp.json())["access_token"]
    finally:
        await daemon.close()
    key_file = daemon.config.token_key_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and len(key_file.read_bytes()) == 32

    daemon, server = await start_platform(tmp_path)
    try:
        assert server.url is not None
        async with aiohttp.ClientSession() as session:
            resp = await session.get(server.url + RULES, headers={"Authorization": f"Bearer {token}"})
            assert resp.status == 200
    finally:
        await daemon.close()


async def test_a_short_key_file_is_a_start_up_error(tmp_path: Path) -> None:
    key_file = tmp_path / "short.key"
    key_file.write_bytes(b"too short")
    with pytest.raises(ConfigError, match="needs at least 32"):
        load_or_create_key(key_file)
    with pytest.raises(ConfigError, match="needs at least 32"):
        await start_platform(tmp_path, token_key_file=str(key_file))


# -- TLS -------------------------------------------------------------------------------------------------


def make_cert(directory: Path, name: str, *, ca: tuple[Path, Path] | None = None) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1 (self-signed, or signed by ``ca``), made with the openssl CLI."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subject = ["-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1"]
    if ca is None:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-days", "2", "-keyout", str(key), "-out", str(cert), *subject], check=True, capture_output=True)
    else:
        csr = directory / f"{name}.csr"
        subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", str(key), "-out", str(csr), *subject], check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
                        "-CAcreateserial", "-days", "2", "-out", str(cert)], check=True, capture_output=True)
    return cert, key


async def test_tls_and_mutual_tls(tmp_path: Path) -> None:
    server_cert, server_key = make_cert(tmp_path, "server")
    client_ca = make_cert(tmp_path, "client-ca")
    client_cert, client_key = make_cert(tmp_path, "client", ca=client_ca)
    tls = {"cert": str(server_cert), "key": str(server_key), "ca": str(client_ca[0])}
    daemon, server = await start_platform(tmp_path, tls=tls)
    try:
        assert server.url is not None and server.url.startswith("https://")
        trusting = ssl.create_default_context(cafile=str(server_cert))
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):  # no client certificate: the handshake fails
                await session.get(server.url + f"{SM}/transports", ssl=trusting)
        trusting.load_cert_chain(client_cert, client_key)
        res = await asyncio.to_thread(
            AdminClient(daemon.config.admin_socket).post,
            "/apps", {"app_instance_id": APP})
        assert res["token_endpoint"] == server.url + "/oauth2/token"
        async with aiohttp.ClientSession() as session:
            resp = await session.post(res["token_endpoint"], data={"grant_type": "client_credentials"},
                                      headers=basic(res["client_id"], res["client_secret"]), ssl=trusting)
            token = (await resp.json())["access_token"]
            resp = await session.get(server.url + f"{SM}/transports", ssl=trusting,
                                     headers={"Authorization": f"Bearer {token}"})
            (transport,) = await resp.json()
            assert transport["security"]["oAuth2Info"]["tokenEndpoint"].startswith("https://")
    finally:
        await daemon.close()


async def test_an_unloadable_certificate_is_a_start_up_error(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="cannot load the Mp1 certificate"):
        await start_platform(tmp_path, tls={"cert": str(tmp_path / "bad.pem"), "key": str(tmp_path / "bad.pem")})
