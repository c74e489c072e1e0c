"""An open-loop HTTP/1.1 load generator: requests at a fixed rate, latency from the planned send time.

wrk (Debian's 4.1) is closed-loop: a connection sends its next request only
after the previous answer, so a slow server is offered less load and its
stalls hide from the percentiles (coordinated omission). Here request i is
planned at ``start + i / rate`` whatever the server does; it is sent on a
free keep-alive connection from a pool (a request waiting for one is
counted as waiting), and its latency runs from its planned time to the end
of the answer. A generator that falls behind therefore charges its own lag
to the server: the numbers are an upper bound. The bare-server baseline in
the same run shows this generator's own floor.

Run as a process of its own (pinned apart from the server)::

    python -m bench._openloop --port 8080 --path /x --rate 1000 --seconds 5 [--method PUT --body-a F --body-b F]

It prints one JSON line: requests, achieved rate, non-2xx answers, and the
p50 / p90 / p99 / max latency in microseconds.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from bench._harness import percentile


def _request(method: str, path: str, port: int, token: str, body: bytes) -> bytes:
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json"]
    if token:
        head.append(f"Authorization: Bearer {token}")
    if method != "GET":
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _answer(reader: asyncio.StreamReader) -> int:
    """Read one answer (Content-Length framed, as aiohttp sends JSON); its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def run(port: int, requests: list[bytes], rate: float, seconds: float, connections: int) -> dict[str, Any]:
    """Send ``rate * seconds`` requests (cycling through ``requests``) on a pool of keep-alive connections."""
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    total = int(rate * seconds)
    latencies: list[float] = []
    failed: list[int] = []

    async def one(i: int, planned: float) -> None:
        reader, writer = await pool.get()
        writer.write(requests[i % len(requests)])
        status = await _answer(reader)
        latencies.append(time.perf_counter() - planned)
        if not 200 <= status < 300:
            failed.append(status)
        pool.put_nowait((reader, writer))

    loop = asyncio.get_running_loop()
    tasks = []
    start = time.perf_counter() + 0.05
    for i in range(total):
        planned = start + i / rate
        delay = planned - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(one(i, planned)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait()[1].close()
    us = [x * 1e6 for x in latencies]
    return {"requests": total, "rate": total / elapsed, "non2xx": len(failed),
            "p50_us": percentile(us, 50), "p90_us": percentile(us, 90), "p99_us": percentile(us, 99), "max_us": max(us)}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench._openloop", description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--method", default="GET")
    ap.add_argument("--token", default="")
    ap.add_argument("--body-a", type=Path, help="file with the body of even requests")
    ap.add_argument("--body-b", type=Path, help="file with the body of odd requests")
    ap.add_argument("--rate", type=float, required=True, help="requests per second")
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--connections", type=int, default=32, help="keep-alive connections in the pool (default 32)")
    args = ap.parse_args()
    bodies = [p.read_bytes() for p in (args.body_a, args.body_b) if p is not None] or [b""]
    requests = [_request(args.method, args.path, args.port, args.token, b) for b in bodies]
    print(json.dumps(asyncio.run(run(args.port, requests, args.rate, args.seconds, args.connections))))


if __name__ == "__main__":
    main()
