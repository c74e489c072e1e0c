"""Mp1: the MEC 011 v2.1.1 REST API for MEC applications.

``ETSI_DIR`` holds the official OpenAPI files (MecAppSupportApi.yaml,
MecServiceMgmtApi.yaml, BSD-3-Clause, see etsi/LICENSE) that the models and
the server conform to.

::

    server.py        Mp1Server: the aiohttp app (middlewares, routes) and its listener
    app_support.py   handlers of /mec_app_support/v1      service_mgmt.py  handlers of /mec_service_mgmt/v1
    subscriptions.py subscription bodies and link lists    http.py          ProblemDetails, bodies, ETags, links
    auth.py          OAuth2 token endpoint, signed bearer tokens, per-app scope
    support.py       AppSupport: what each operation means, over the store (a daemon service)
    termination.py   Terminator: notify, wait, remove, finish
    notify.py        Notifier: callbacks with retries and the delivery log
    metrics.py       Prometheus /metrics: data-plane counters, request latency
    keys.py          typed aiohttp application keys

docs/mp1.md describes the API, the auth flow, the error model, notifications and metrics.
"""
from __future__ import annotations

from pathlib import Path

from .server import Mp1Server
from .support import AppSupport, IssuedCredentials, NewApp

__all__ = ["ETSI_DIR", "Mp1Server", "AppSupport", "NewApp", "IssuedCredentials"]

ETSI_DIR = Path(__file__).resolve().with_name("etsi")
