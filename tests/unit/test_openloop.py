"""bench/_openloop.py against a real aiohttp server on loopback: every planned request is sent once, answers
are framed right, non-2xx answers are counted, and latency runs from the planned send (no root)."""
from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bench import _openloop


@pytest.mark.asyncio
async def test_sends_every_planned_request_and_counts_failures() -> None:
    seen: list[tuple[str, bytes]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.method, await request.read()))
        if len(seen) % 4 == 0:
            return web.json_response({"detail": "no"}, status=404)
        if len(seen) % 4 == 1:
            await asyncio.sleep(0.02)  # one slow answer in four: the requests planned behind it wait
        return web.json_response({"n": len(seen), "pad": "x" * 3000})

    app = web.Application()
    app.router.add_put("/r", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        port = server.port
        assert port is not None
        requests = [_openloop._request("PUT", "/r", port, "tok", body) for body in (b'{"a":1}', b'{"b":2}')]
        t0 = time.perf_counter()
        result = await _openloop.run(port, requests, rate=400, seconds=0.5, connections=2)
        elapsed = time.perf_counter() - t0
    finally:
        await server.close()
    assert result["requests"] == 200 and len(seen) == 200
    assert [body for _, body in seen[:4]] == [b'{"a":1}', b'{"b":2}', b'{"a":1}', b'{"b":2}']
    assert {method for method, _ in seen} == {"PUT"}
    assert result["non2xx"] == 50
    # 50 answers took 20 ms on a pool of 2 connections: the plan (2.5 ms apart) fell behind, and the
    # requests waiting for a connection are charged from their planned time.
    assert result["max_us"] >= 20_000 and result["p50_us"] <= result["p99_us"] <= result["max_us"]
    assert elapsed >= 0.5
