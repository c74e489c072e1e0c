"""Mp1 security: OAuth 2.0 client credentials (RFC 6749 4.4) and bearer tokens scoped to one app instance.

Flow::

    app --POST /oauth2/token (HTTP Basic client_id:client_secret, grant_type=client_credentials)--> MEP
    MEP --{"access_token": "<JWT>", "token_type": "Bearer", "expires_in": 3600}--> app
    app --GET /mec_app_support/v1/applications/<its id>/traffic_rules, Authorization: Bearer <JWT>--> MEP

**Tokens are signed, not stored.** A token is a JWT (RFC 7519) signed with
HMAC-SHA256 under a 256-bit key read from ``mp1.token_key_file`` (created
with mode 0600 on first start, so tokens survive a restart). Its claims name
the app instance (``sub``), the client id it was issued to (``cid``), the
platform instance (``iss``) and the expiry (``exp``, ``mp1.token_ttl_s``).
Why signed rather than a stored random token: verifying costs one HMAC and
one in-memory read per request, issuing writes nothing (a stored token
would cost a store transaction, an fsync, per issue and per expiry sweep,
and state to replicate under etcd). What a stored token buys, revocation,
comes from binding the token to the client id: every request also checks
that the app instance still exists and still has that client id, so
rotating an app's credentials (``mep app credentials``) or deleting the app
invalidates its outstanding tokens at once.

Verification order: a missing, malformed, forged or expired token, or one
whose app or client id is gone, is 401 with an RFC 6750 challenge. A valid
token used on ``/applications/<other id>/...`` is 404 if that instance does
not exist and 403 if it does. The timing and transports resources and the
platform-wide service queries are open to any valid token.

Client secrets are checked with scrypt (mep/credentials.py, ~20 ms each), in
a worker thread, at most ``_SCRYPT_SLOTS`` at once, so a flood of token
requests cannot stall the event loop. Unknown client ids are checked
against a dummy hash, so response time does not reveal which ids exist.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from ..credentials import hash_secret, verify_secret
from ..errors import ConfigError, Forbidden, MepError
from ..state.lifecycle import AppState
from ..state.records import AppInstance
from ..state.store import Store
from .http import BearerError

__all__ = [
    "TOKEN_PATH",
    "API_PREFIXES",
    "Principal",
    "TokenIssuer",
    "load_or_create_key",
    "token_endpoint",
    "bearer_middleware",
]

TOKEN_PATH = "/oauth2/token"
API_PREFIXES = ("/mec_app_support/", "/mec_service_mgmt/")
KEY_BYTES = 32
_MAX_TOKEN_CHARS = 2048  # our tokens are ~300 characters; anything near this is not ours
_MAX_FORM_BYTES = 4096  # a token request is a few form fields
_SCRYPT_SLOTS = 2  # concurrent secret checks (each ~20 ms of CPU and 16 MiB)
_VERIFIED_TOKENS = 4096  # tokens whose signature is known good; the cache starts over when full
_JWT_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(text: bytes) -> bytes:
    return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))


def load_or_create_key(path: Path) -> bytes:
    """The token-signing key in ``path``; a new random one (file mode 0600) if the file does not exist.

    ConfigError if the file is unreadable or shorter than 32 bytes.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot create the Mp1 token key {path}: {exc.strerror}", field="mp1.token_key_file") from None
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the Mp1 token key {path}: {exc.strerror}", field="mp1.token_key_file") from None
    if len(key) < KEY_BYTES:
        raise ConfigError(
            f"the Mp1 token key {path} holds {len(key)} bytes; it needs at least {KEY_BYTES} (delete it to get a new one)",
            field="mp1.token_key_file",
        )
    return key


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for."""

    app_instance_id: str
    client_id: str
    expires_at: int


class TokenIssuer:
    """Issues and verifies the signed access tokens (see the module docstring)."""

    def __init__(
        self, key: bytes, *, ttl_s: int, issuer: str, store: Store, clock: Callable[[], float] = time.time
    ) -> None:
        self._key = key
        self.ttl_s = ttl_s
        self.issuer = issuer
        self._store = store
        self._clock = clock
        self._verified: dict[str, tuple[str, str, int]] = {}

    def issue(self, app: AppInstance) -> str:
        """A token for ``app``'s current client id, valid for ``ttl_s`` seconds."""
        now = int(self._clock())
        claims = {"iss": self.issuer, "sub": app.appInstanceId, "cid": app.client_id, "iat": now, "exp": now + self.ttl_s}
        signing_input = _JWT_HEADER + b"." + _b64(json.dumps(claims, separators=(",", ":")).encode())
        return (signing_input + b"." + _b64(self._sign(signing_input))).decode()

    def _sign(self, data: bytes) -> bytes:
        return hmac.new(self._key, data, hashlib.sha256).digest()

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; BearerError (401) for anything else.

        A token whose signature and claims were checked once is remembered
        (at most ``_VERIFIED_TOKENS``); its expiry and the app's current
        client id are checked on every use.
        """
        claims = self._verified.get(token)
        if claims is None:
            claims = self._claims(token)
            if len(self._verified) >= _VERIFIED_TOKENS:
                self._verified.clear()
            self._verified[token] = claims
        app_id, client_id, expires_at = claims
        if expires_at <= self._clock():
            raise BearerError("the access token has expired; request a new one")
        try:
            app = self._store.get_app(app_id)
        except MepError:
            raise BearerError(f"app instance '{app_id}' of the access token no longer exists") from None
        if not client_id or app.client_id != client_id or app.state is AppState.TERMINATED:
            raise BearerError("the credentials this access token was issued for are no longer valid")
        return Principal(app_id, client_id, expires_at)

    def _claims(self, token: str) -> tuple[str, str, int]:
        """(app instance, client id, expiry) of a token this platform signed; BearerError otherwise."""
        if len(token) > _MAX_TOKEN_CHARS or not token.isascii():
            raise BearerError("the access token is not one this platform issued")
        parts = token.encode().split(b".")
        # The header must be exactly ours: no algorithm negotiation ("alg": "none" and friends).
        if len(parts) != 3 or parts[0] != _JWT_HEADER:
            raise BearerError("the access token is not one this platform issued")
        try:
            signature = _unb64(parts[2])
        except (binascii.Error, ValueError):
            raise BearerError("the access token is not one this platform issued") from None
        if not hmac.compare_digest(signature, self._sign(parts[0] + b"." + parts[1])):
            raise BearerError("the access token's signature is not valid")
        claims = json.loads(_unb64(parts[1]))  # signed by us: well-formed
        if claims.get("iss") != self.issuer:
            raise BearerError("the access token was issued by another platform instance")
        return str(claims["sub"]), str(claims["cid"]), int(claims["exp"])


class _TokenRequestError(Exception):
    """An RFC 6749 section 5.2 error of the token endpoint."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


def _oauth_error(exc: _TokenRequestError, path: str) -> web.Response:
    # RFC 6749 5.2 members, plus the ProblemDetails members every other Mp1 error has.
    body = {
        "error": exc.error,
        "error_description": exc.description,
        "type": "about:blank",
        "title": "Unauthorized" if exc.status == 401 else "Bad request",
        "status": exc.status,
        "detail": exc.description,
        "instance": path,
    }
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="mep"'
    return web.json_response(body, status=exc.status, headers=headers)


def _client_credentials(request: web.Request, form: dict[str, str]) -> tuple[str, str]:
    basic = request.headers.get("Authorization")
    in_body = "client_id" in form or "client_secret" in form
    if basic is not None:
        if in_body:
            raise _TokenRequestError(400, "invalid_request", "use one client authentication method, not two")
        scheme, _, encoded = basic.partition(" ")
        if scheme.lower() != "basic":
            raise _TokenRequestError(401, "invalid_client", "client authentication must use HTTP Basic")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, ValueError):
            raise _TokenRequestError(401, "invalid_client", "the Basic credentials are not base64") from None
        client_id, sep, secret = decoded.partition(":")
        if not sep:
            raise _TokenRequestError(401, "invalid_client", "the Basic credentials lack a ':'")
        # RFC 6749 2.3.1: both are form-urlencoded before Basic encoding.
        return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))
    if not in_body:
        raise _TokenRequestError(401, "invalid_client", "no client authentication (HTTP Basic, or client_id and client_secret)")
    return form.get("client_id", ""), form.get("client_secret", "")


class _SecretChecker:
    """Constant-shape scrypt checks, at most ``_SCRYPT_SLOTS`` at once, off the event loop."""

    def __init__(self) -> None:
        self._slots = asyncio.Semaphore(_SCRYPT_SLOTS)
        self._dummy = hash_secret(secrets.token_urlsafe(16))

    async def check(self, secret: str, stored: str | None) -> bool:
        async with self._slots:
            ok = await asyncio.to_thread(verify_secret, secret, stored or self._dummy)
        return ok and stored is not None


def token_endpoint(
    issuer: TokenIssuer, find_client: Callable[[str], AppInstance | None]
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The handler of POST /oauth2/token (RFC 6749 section 4.4, client credentials grant)."""
    checker = _SecretChecker()

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            if request.content_type != "application/x-www-form-urlencoded":
                raise _TokenRequestError(400, "invalid_request", "the body must be application/x-www-form-urlencoded")
            if (request.content_length or 0) > _MAX_FORM_BYTES:
                raise _TokenRequestError(400, "invalid_request", f"the body exceeds {_MAX_FORM_BYTES} bytes")
            form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
            if form.get("grant_type") != "client_credentials":
                raise _TokenRequestError(
                    400, "unsupported_grant_type" if "grant_type" in form else "invalid_request",
                    "grant_type must be client_credentials",
                )
            client_id, secret = _client_credentials(request, form)
            app = find_client(client_id) if 0 < len(client_id) <= 512 and len(secret) <= 512 else None
            ok = await checker.check(secret, app.client_secret_hash if app is not None else None)
            if app is None or not ok:
                raise _TokenRequestError(401, "invalid_client", "unknown client id or wrong client secret")
            if app.state is AppState.TERMINATED:
                raise _TokenRequestError(401, "invalid_client", f"app instance '{app.appInstanceId}' is terminated")
        except _TokenRequestError as exc:
            return _oauth_error(exc, request.path)
        body: dict[str, Any] = {"access_token": issuer.issue(app), "token_type": "Bearer", "expires_in": issuer.ttl_s}
        return web.json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    return handle


def bearer_middleware(
    issuer: TokenIssuer, require_app: Callable[[str], AppInstance]
) -> Callable[[web.Request, Callable[[web.Request], Awaitable[web.StreamResponse]]], Awaitable[web.StreamResponse]]:
    """Authenticate every request under API_PREFIXES and confine it to its own app instance.

    Raises BearerError (401), NotFound (404,
    from ``require_app``) or Forbidden (403); the problems middleware around
    it renders them.
    """

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIXES):
            return await handler(request)
        header = request.headers.get("Authorization")
        if header is None:
            raise BearerError("this resource needs an access token: Authorization: Bearer <token>", error=None)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise BearerError("the Authorization header must be 'Bearer <token>'", error=None)
        principal = issuer.verify(token.strip())
        target = request.match_info.get("appInstanceId")
        if target is not None and target != principal.app_instance_id:
            require_app(target)  # NotFound (404) when there is no such instance
            raise Forbidden(
                f"the access token of app instance '{principal.app_instance_id}' does not grant access to "
                f"app instance '{target}'",
                field="appInstanceId",
            )
        return await handler(request)

    return middleware
