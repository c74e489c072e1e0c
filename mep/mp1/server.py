"""The Mp1 server: the aiohttp application and the daemon service that listens with it.

Middlewares, outermost first::

    metrics (time every request)  ->  problems (errors -> ProblemDetails, 414)  ->  bearer auth  ->  handler

Routes: the two MEC 011 APIs (app_support.py, service_mgmt.py), the OAuth2
token endpoint (auth.py) and, with ``mp1.metrics``, GET /metrics. Request
bodies are bounded by ``mp1.max_body_bytes`` (413), request lines and
header fields by aiohttp's limits; a request target longer than 8 KiB is
answered 414.

``mp1.tls`` makes it HTTPS (with ``ca``: clients must present a certificate
signed by it). Mutual TLS authenticates the connection; which app instance
a request acts for is still decided by its bearer token.
"""
from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from prometheus_client.registry import Collector

from ..config import Config, TlsConfig
from ..dataplane.engine import Engine
from ..errors import ConfigError
from ..log import get_logger
from . import app_support, service_mgmt
from .auth import TOKEN_PATH, TokenIssuer, bearer_middleware, load_or_create_key, token_endpoint
from .http import MAX_TARGET_BYTES, Representations, problems_middleware
from .keys import REPRESENTATIONS, SUPPORT
from .metrics import Mp1Metrics
from .support import AppSupport

__all__ = ["Mp1Server", "RUNNER_OPTIONS", "tls_context"]

log = get_logger(__name__)

# aiohttp.web.AppRunner options: no access log (metrics time every request), signals are
# the daemon's, and room above MAX_TARGET_BYTES so that a long target gets our 414,
# not aiohttp's bare 400 (its own limit is 8190 bytes).
RUNNER_OPTIONS: dict[str, Any] = {"access_log": None, "handle_signals": False, "max_line_size": MAX_TARGET_BYTES * 2}


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """The server TLS context of ``tls``; ConfigError naming the file that does not load."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the Mp1 certificate {tls.cert} / key {tls.key}: {exc}", field="mp1.tls.cert") from None
    if tls.ca is not None:
        try:
            ctx.load_verify_locations(tls.ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the Mp1 client CA {tls.ca}: {exc}", field="mp1.tls.ca") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class Mp1Server:
    """Mp1 as a daemon service (``name = "mp1"``): ``start()`` binds ``mp1.listen``; ``url`` is then set."""

    name = "mp1"

    def __init__(self, config: Config, support: AppSupport, engine: Engine,
                 collectors: Sequence[Collector] = ()) -> None:
        self.config = config
        self.collectors = collectors  # more series for /metrics (the DNS responder's)
        self.support = support
        self.engine = engine
        self.url: str | None = None  # http(s)://host:port once listening
        self.issuer: TokenIssuer | None = None
        self._runner: web.AppRunner | None = None

    def _issuer(self) -> TokenIssuer:
        if self.issuer is None:
            self.issuer = TokenIssuer(
                load_or_create_key(self.config.token_key_file),
                ttl_s=self.config.mp1.token_ttl_s,
                issuer=f"mep:{self.config.instance}",
                store=self.support.store,
            )
        return self.issuer

    def app(self) -> web.Application:
        """A new aiohttp application serving Mp1 (also what tests hand to aiohttp's test client)."""
        issuer = self._issuer()
        support = self.support
        middlewares: list[Callable[..., Awaitable[web.StreamResponse]]] = []
        metrics = Mp1Metrics(self.engine, support.notifier, self.collectors) if self.config.mp1.metrics else None
        if metrics is not None:
            middlewares.append(metrics.middleware)
        middlewares += [problems_middleware, bearer_middleware(issuer, support.require_app)]
        app = web.Application(middlewares=middlewares, client_max_size=self.config.mp1.max_body_bytes)
        app[SUPPORT] = support
        app[REPRESENTATIONS] = Representations()
        app_support.add_routes(app)
        service_mgmt.add_routes(app)
        app.router.add_post(TOKEN_PATH, token_endpoint(issuer, support.app_for_client))
        if metrics is not None:
            app.router.add_get("/metrics", metrics.handle)
        return app

    async def start(self) -> None:
        """Listen on ``mp1.listen`` (port 0: any free port; ``url`` says which)."""
        mp1 = self.config.mp1
        host, _, port = mp1.listen.rpartition(":")
        host = host.strip("[]")
        ctx = tls_context(mp1.tls) if mp1.tls is not None else None
        runner = web.AppRunner(self.app(), **RUNNER_OPTIONS)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, host, int(port), ssl_context=ctx)
        await site.start()
        bound = runner.addresses[0]
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        self.url = f"{'https' if ctx else 'http'}://{shown}:{bound[1]}"
        log.info("mp1_listening", url=self.url, tls=ctx is not None, mutual_tls=bool(mp1.tls and mp1.tls.ca),
                 token_endpoint=self.url + TOKEN_PATH, metrics=mp1.metrics)

    async def stop(self) -> None:
        """Stop listening; requests in flight finish first (aiohttp's shutdown timeout)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.url = None
