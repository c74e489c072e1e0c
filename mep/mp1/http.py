"""HTTP plumbing every Mp1 handler shares: errors as ProblemDetails, JSON bodies, ETags, links.

Contract of the helpers (handlers rely on all of it):

- Any ``MepError`` a handler or middleware raises becomes an RFC 7807
  ``application/problem+json`` response with the error's status and title,
  the detail, ``instance`` (the request path) and the extension member
  ``field`` naming the offending field, header or parameter. aiohttp's own
  HTTP errors (no route: 404, wrong method: 405 with ``Allow``, body over
  ``mp1.max_body_bytes``: 413) get the same shape; an unexpected exception
  is logged and answered with a 500 that reveals nothing.
- ``json_body`` reads a bounded body and parses it; ``parse_model`` turns it
  into a model, naming the first invalid field (``trafficFilter.0.dstPort.0``).
- Every JSON representation carries an ``ETag``: a stored record's revision
  (``"<revision>"``, what ``If-Match`` is compared with), or for anything
  else (lists, timing, transports) a hash of the body. ``Representations``
  renders each stored record version to JSON once.
- ``origin(request)`` is ``scheme://host`` as the client addressed us: the
  base of every Location header and ``_links`` href.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from ..errors import InvalidInput, MepError, PreconditionFailed, Unauthorized
from ..log import get_logger
from ..state.records import Record, StoredDnsRule, StoredService, StoredSubscription, StoredTrafficRule

__all__ = [
    "PROBLEM_JSON",
    "MAX_TARGET_BYTES",
    "BearerError",
    "IfMatch",
    "problem_response",
    "problems_middleware",
    "json_body",
    "parse_model",
    "invalid_input",
    "json_response",
    "raw_json_response",
    "Representations",
    "body_etag",
    "parse_if_match",
    "expected_revision",
    "origin",
]

log = get_logger(__name__)

PROBLEM_JSON = "application/problem+json"
MAX_TARGET_BYTES = 8192  # longest request target (path and query) served; longer: 414
_JSON_TYPES = re.compile(r"^application/([a-z0-9.+-]+\+)?json$")
# The Host header as far as we repeat it in links: a name or address and a port.
_HOST = re.compile(r"^[A-Za-z0-9.\-]{1,253}(:\d{1,5})?$|^\[[0-9A-Fa-f:.]{2,45}\](:\d{1,5})?$")
M = TypeVar("M", bound=BaseModel)
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BearerError(Unauthorized):
    """A missing or unusable bearer token: 401 with an RFC 6750 ``WWW-Authenticate`` challenge.

    ``error`` is the RFC 6750 error code (``invalid_token``), or None when
    the request carried no token at all (the challenge then names no error).
    """

    def __init__(self, detail: str, *, error: str | None = "invalid_token") -> None:
        super().__init__(detail, field="Authorization")
        challenge = 'Bearer realm="mep"'
        if error is not None:
            quoted = detail.replace("\\", "\\\\").replace('"', '\\"')
            challenge += f', error="{error}", error_description="{quoted}"'
        self.challenge = challenge


def _compact_json(data: Any) -> bytes:
    """``data`` as compact JSON text (UTF-8): every body this module writes."""
    return json.dumps(data, separators=(",", ":")).encode()


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    field: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An RFC 7807 ProblemDetails response (``field`` is an extension member)."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if instance is not None:
        body["instance"] = instance
    if field is not None:
        body["field"] = field
    return web.Response(
        body=_compact_json(body),
        status=status,
        content_type=PROBLEM_JSON,
        headers=headers,
    )


@web.middleware
async def problems_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Turn every error into ProblemDetails (see the module docstring); refuse over-long targets (414)."""
    if len(request.raw_path) > MAX_TARGET_BYTES:
        return problem_response(414, "URI too long", f"the request target exceeds {MAX_TARGET_BYTES} bytes",
                                field="query", instance=request.path[:256])
    try:
        return await handler(request)
    except MepError as exc:
        headers = {"WWW-Authenticate": exc.challenge} if isinstance(exc, BearerError) else None
        return problem_response(
            exc.http_status, exc.title, exc.detail, field=exc.field, instance=request.path, headers=headers
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kept = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        detail = exc.text if exc.text and exc.text != f"{exc.status}: {exc.reason}" else exc.reason
        return problem_response(exc.status, exc.reason, detail, instance=request.path, headers=kept)
    except Exception as exc:  # a bug: logged in full, answered without internals
        log.exception("mp1_internal_error", method=request.method, path=request.path, error=type(exc).__name__)
        return problem_response(500, "Internal error", "the platform failed to handle this request", instance=request.path)


async def json_body(request: web.Request) -> Any:
    """The request body as parsed JSON; InvalidInput when absent, not JSON, or of another media type.

    The size is bounded by the application's ``client_max_size`` (413).
    """
    declared = request.headers.get("Content-Type")
    if declared is not None and not _JSON_TYPES.match(request.content_type):
        raise InvalidInput(f"the body must be application/json, not {request.content_type}", field="Content-Type")
    raw = await request.read()
    if not raw.strip():
        raise InvalidInput("a JSON body is required", field="body")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise InvalidInput(f"the body is not valid JSON: {reason}", field="body") from None


def _location(loc: tuple[int | str, ...]) -> str:
    # Union members and validator wrappers appear in pydantic locations as
    # type names ("DestinationInterface", "list[...]"); the client only knows
    # member names and indexes.
    parts = [str(p) for p in loc if isinstance(p, int) or not (p[:1].isupper() or "[" in p)]
    return ".".join(parts)


def invalid_input(exc: ValidationError) -> InvalidInput:
    """The first validation error as InvalidInput naming its field (and how many more there are)."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    field = _location(tuple(first["loc"])) or "body"
    message = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return InvalidInput(f"{message}{more}", field=field)


def parse_model(model: type[M], data: Any) -> M:
    """``model`` validated from ``data``; InvalidInput naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_input(exc) from None


def body_etag(body: bytes) -> str:
    """A strong ETag for a representation that is not one stored record: a hash of its bytes."""
    return '"h' + hashlib.blake2b(body, digest_size=8).hexdigest() + '"'


def raw_json_response(
    body: bytes, *, status: int = 200, etag: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    """``body`` (JSON text) with an ETag: ``etag`` when given, else the body's hash."""
    out = {"ETag": etag or body_etag(body)}
    if headers:
        out.update(headers)
    return web.Response(body=body, status=status, content_type="application/json", headers=out)


def json_response(
    data: Any, *, status: int = 200, record: Record | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    """``data`` as JSON; the ETag is ``record``'s revision when it represents one stored record."""
    body = _compact_json(data)
    return raw_json_response(body, status=status, etag=record.etag if record is not None else None, headers=headers)


def _record_json(record: Record) -> bytes:
    match record:
        case StoredService():
            return record.service.to_json_text()
        case StoredTrafficRule() | StoredDnsRule():
            return record.rule.to_json_text()
        case StoredSubscription():
            return _compact_json(record.body)
    raise TypeError(f"no wire form for {type(record).__name__}")


def _record_key(record: Record) -> tuple[str, str, str, int]:
    match record:
        case StoredService():
            key = record.service.serInstanceId or ""
        case StoredTrafficRule():
            key = record.rule.trafficRuleId
        case StoredDnsRule():
            key = record.rule.dnsRuleId
        case StoredSubscription():
            key = record.subscription_id
        case _:
            raise TypeError(f"no wire form for {type(record).__name__}")
    return (type(record).__name__, getattr(record, "app_instance_id"), key, record.revision)


class Representations:
    """The JSON of stored records (services, rules, subscriptions), rendered once per record version.

    Stored records are immutable and every write gives a new revision, so
    (kind, app, id, revision) names one representation for good. The cache
    holds at most ``limit`` of them and starts over when full: a bound, not
    an LRU, because rendering again is cheap and cleanup rarely needed.
    """

    def __init__(self, limit: int = 65_536) -> None:
        self.limit = limit
        self._rendered: dict[tuple[str, str, str, int], bytes] = {}

    def json(self, record: Record) -> bytes:
        """The record's body as JSON text."""
        return self._json(record, _record_key(record))

    def _json(self, record: Record, key: tuple[str, str, str, int]) -> bytes:
        text = self._rendered.get(key)
        if text is None:
            if len(self._rendered) >= self.limit:
                self._rendered.clear()
            text = _record_json(record)
            self._rendered[key] = text
        return text

    def one(self, record: Record, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        """The record as a response; its ETag is its revision."""
        return raw_json_response(self.json(record), status=status, etag=record.etag, headers=headers)

    def many(self, records: Iterable[Record]) -> web.Response:
        """A JSON array of the records; the ETag is a hash of the body."""
        return raw_json_response(b"[" + b",".join([self._json(r, _record_key(r)) for r in records]) + b"]")


@dataclass(frozen=True, slots=True)
class IfMatch:
    """A parsed If-Match header: ``*``, or the revisions named by strong ``"<revision>"`` tags."""

    any: bool
    revisions: frozenset[int]


_ETAG = re.compile(r'\s*(W/)?"([\x21\x23-\x7e]*)"\s*(,|$)')


def parse_if_match(header: str | None) -> IfMatch | None:
    """None when absent; InvalidInput (400) when it is not ``*`` or a list of entity tags (RFC 9110 13.1.1).

    Weak tags and tags that are not a revision are valid syntax that never
    matches (If-Match compares strongly).
    """
    if header is None:
        return None
    if header.strip() == "*":
        return IfMatch(True, frozenset())
    if len(header) > 4096:
        raise InvalidInput("If-Match is longer than 4096 characters", field="If-Match")
    revisions: set[int] = set()
    pos = 0
    while pos < len(header):
        m = _ETAG.match(header, pos)
        if m is None or m.end() == pos:
            raise InvalidInput('If-Match must be "*" or entity tags such as "12"', field="If-Match")
        weak, tag = m.group(1), m.group(2)
        if not weak and tag.isdigit() and len(tag) <= 18:
            revisions.add(int(tag))
        pos = m.end()
    return IfMatch(False, frozenset(revisions))


def expected_revision(current: Record, if_match: IfMatch | None, what: str) -> int | None:
    """The ``expected_revision`` for a store write under ``if_match``; PreconditionFailed if it cannot match."""
    if if_match is None:
        return None
    if if_match.any or current.revision in if_match.revisions:
        return current.revision
    raise PreconditionFailed(f"{what} is at ETag {current.etag}, which If-Match does not name", field="If-Match")


def origin(request: web.Request) -> str:
    """``scheme://host[:port]`` as the client addressed this server (the listener's address if Host is odd)."""
    host = request.host
    if not _HOST.match(host):
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if sockname:
            addr = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
            host = f"{addr}:{sockname[1]}"
        else:
            host = "localhost"
    return f"{request.scheme}://{host}"
