"""Reliability drill: a real uvicorn app on a private redis-server, faults under load, usage reconciled.

    .venv/bin/python -m bench.drill            # about 40 s; loopback only, free ports, temp dirs

Scenarios (each its own redis-server with an fsync'ed AOF, so a restart keeps what was written):
restart (SIGTERM + start again), pause (SIGSTOP 2 s), stall (``DEBUG SLEEP 2``) under load; SIGTERM of
the app under load (its lifespan shutdown must flush the buffered usage); four app processes against
one $1.00 budget. For each: requests sent, answers by status, tracked 200s (the view says whether the
middleware metered it) against the requests and cost Redis holds, and the slowest answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import httpx

IDS = tuple(f"drill_{n}" for n in range(8))
COST = Decimal("0.0001")  # what the view records per tracked request
ESTIMATE = Decimal("0.01")  # the budget scenario's reservation and cost
PREFIX = "drill"
SOCKET_TIMEOUT = 1.0  # below the 2 s faults: settlement writes time out and are retried (exactly once)


# -- the app under test ------------------------------------------------------------------------
def build_app(url: str) -> object:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from identity_middleware import IdentityMiddleware, current_identity, record_usage
    from identity_middleware.stores import RedisStore

    async def chat(request: Request) -> JSONResponse:
        tracked = current_identity() is not None
        record_usage(ESTIMATE if request.url.path == "/budgeted" else COST)
        return JSONResponse({"tracked": tracked})

    store = RedisStore.from_url(url, prefix=PREFIX, socket_timeout=SOCKET_TIMEOUT)  # request_timeout: default
    routes = [Route("/chat", chat, methods=["POST"]), Route("/budgeted", chat, methods=["POST"])]
    return Starlette(routes=routes, middleware=[
        Middleware(IdentityMiddleware, store=store, estimates={"/budgeted": str(ESTIMATE)})])


def serve(port: int, url: str) -> None:
    import uvicorn

    from .serve import default_http, default_loop

    uvicorn.run(build_app(url), host="127.0.0.1", port=port, loop=default_loop(), http=default_http(),  # type: ignore[arg-type]
                access_log=False, log_level="warning")


# -- processes ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


class Redis:
    """A private redis-server on a free loopback port, AOF fsync'ed on every write."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found (apt-get install -y redis-server)")
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="idm-drill-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--enable-debug-command", "local",
             "--logfile", str(self.dir / "redis.log")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, process, "redis-server")
        return process

    def restart(self, down: float) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        time.sleep(down)
        self.process = self._start()

    def pause(self, seconds: float) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)
        time.sleep(seconds)
        os.kill(self.process.pid, signal.SIGCONT)

    def stall(self, seconds: float) -> None:
        with socket.create_connection(("127.0.0.1", self.port)) as sock:
            sock.sendall(b"DEBUG SLEEP %d\r\n" % seconds)
            sock.settimeout(seconds + 10)
            if not sock.recv(16).startswith(b"+OK"):
                raise RuntimeError("DEBUG SLEEP refused")

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGCONT)
        self.process.kill()
        self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def apps(url: str, count: int = 1) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` uvicorn processes serving :func:`build_app`; their ports are in ``.args[-1]``."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            port = free_port()
            processes.append(subprocess.Popen([sys.executable, "-m", "bench.drill", "--serve", str(port), url]))
        for process in processes:
            _wait_port(int(process.args[-2]), process, "the app")  # type: ignore[index]
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM: uvicorn finishes what is in flight, runs the lifespan shutdown (the flush), exits."""
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=30)


# -- load and reconciliation -------------------------------------------------------------------
@dataclass
class Tally:
    sent: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    tracked: int = 0
    timings: list[tuple[float, float]] = field(default_factory=list)  # (sent at, seconds to answer)
    fault: tuple[float, float] | None = None  # when the fault began and ended

    def p99_ms(self) -> str:
        answered = sorted(seconds for _, seconds in self.timings)
        return f"{answered[int(len(answered) * 0.99)] * 1000:.0f}" if answered else "-"

    def slowest_in_fault_ms(self) -> str:
        if self.fault is None:
            return "-"
        begin, end = self.fault
        during = [seconds for sent, seconds in self.timings if begin <= sent <= end]
        return f"{max(during) * 1000:.0f} ({len(during)})" if during else "-"


async def load(ports: list[int], seconds: float, tally: Tally, *, path: str = "/chat", workers: int = 16,
               total: int | None = None, ids: tuple[str, ...] = IDS) -> None:
    """``workers`` keep-alive clients posting chat bodies round robin over ``ports`` for ``seconds``
    (or until ``total`` requests are sent)."""
    deadline = time.monotonic() + seconds

    async def worker(number: int, client: httpx.AsyncClient) -> None:
        n = 0
        while time.monotonic() < deadline and (total is None or tally.sent < total):
            tally.sent += 1
            n += 1
            port = ports[(number + n) % len(ports)]
            body = {"identity": {"id": ids[(number + n) % len(ids)]}, "messages": [{"role": "user", "content": "hi"}]}
            started = time.monotonic()
            try:
                response = await client.post(f"http://127.0.0.1:{port}{path}", json=body)
            except httpx.HTTPError:
                tally.statuses["no answer"] += 1
                await asyncio.sleep(0.05)  # the app is gone (SIGTERM): do not spin
                continue
            tally.timings.append((started, time.monotonic() - started))
            tally.statuses[str(response.status_code)] += 1
            if response.status_code == 200 and response.json()["tracked"]:
                tally.tracked += 1

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=workers)) as client:
        await asyncio.gather(*(worker(number, client) for number in range(workers)))


def recorded(url: str, ids: tuple[str, ...] = IDS) -> tuple[int, Decimal]:
    from identity_middleware.stores import RedisStore

    store = RedisStore.from_url(url, prefix=PREFIX)
    try:
        totals = [store.metrics(identity) for identity in ids]
    finally:
        store.close()
    return sum(m.total_requests for m in totals), sum((Decimal(str(m.total_cost)) for m in totals), Decimal(0))


Row = dict[str, str]


def row(name: str, tally: Tally, url: str, cost: Decimal = COST, ids: tuple[str, ...] = IDS) -> Row:
    requests, spent = recorded(url, ids)
    counted = round(spent / cost)  # requests whose cost landed
    ok = tally.statuses["200"]
    return {"scenario": name, "sent": str(tally.sent),
            "answered": " ".join(f"{status}: {count}" for status, count in sorted(tally.statuses.items())),
            "2xx tracked": f"{tally.tracked} of {ok}", "recorded": f"{requests} req, ${spent}",
            "lost": str(max(tally.tracked - counted, 0)), "double-counted": str(max(counted - tally.tracked, 0)),
            "p99 ms": tally.p99_ms(), "slowest ms during the fault (requests)": tally.slowest_in_fault_ms()}


async def _under_load(fault: Callable[[], None], tally: Tally, port: int, seconds: float = 8.0) -> None:
    async def later() -> None:
        await asyncio.sleep(2.0)
        began = time.monotonic()
        await asyncio.to_thread(fault)
        tally.fault = (began, time.monotonic())

    await asyncio.gather(load([port], seconds, tally), later())


def fault_drill(name: str, act: Callable[[Redis], None]) -> Row:
    redis = Redis()
    try:
        tally = Tally()
        with apps(redis.url) as (app,):
            asyncio.run(_under_load(lambda: act(redis), tally, int(app.args[-2])))  # type: ignore[index]
            stop(app)
        return row(name, tally, redis.url)
    finally:
        redis.close()


def sigterm_drill() -> Row:
    redis = Redis()
    try:
        tally = Tally()
        with apps(redis.url) as (app,):
            def terminate() -> None:
                stop(app)

            asyncio.run(_under_load(terminate, tally, int(app.args[-2]), seconds=4.0))  # type: ignore[index]
        return row("SIGTERM app under load", tally, redis.url)
    finally:
        redis.close()


def budget_drill() -> Row:
    from identity_middleware import Budget, IdentityInput, Period
    from identity_middleware.stores import RedisStore

    redis = Redis()
    try:
        store = RedisStore.from_url(redis.url, prefix=PREFIX)
        store.create(IdentityInput(id="shared"))
        store.set_budget("shared", Budget(period=Period.DAILY, amount=Decimal("1.00")))
        store.close()
        tally = Tally()
        with apps(redis.url, 4) as processes:
            ports = [int(process.args[-2]) for process in processes]  # type: ignore[index]
            asyncio.run(load(ports, 60, tally, path="/budgeted", workers=64, total=800, ids=("shared",)))
            for process in processes:
                stop(process)
        result = row("4 apps, one $1.00 budget", tally, redis.url, ESTIMATE, ("shared",))
        store = RedisStore.from_url(redis.url, prefix=PREFIX)
        status = store.budget_status("shared")[0]
        store.close()
        result["recorded"] += f"; spent ${status.spent} of $1.00, reserved ${status.reserved}"
        return result
    finally:
        redis.close()


DRILLS: dict[str, Callable[[], Row]] = {
    "restart": lambda: fault_drill("redis restart (down 1 s)", lambda redis: redis.restart(1.0)),
    "pause": lambda: fault_drill("redis SIGSTOP 2 s", lambda redis: redis.pause(2.0)),
    "stall": lambda: fault_drill("redis DEBUG SLEEP 2", lambda redis: redis.stall(2)),
    "sigterm": sigterm_drill,
    "budget": budget_drill,
}


def table(rows: list[Row]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(each[column] for column in columns) + " |" for each in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from identity_middleware.stores.redis.options import REQUEST_TIMEOUT

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "REDIS_URL"), help=argparse.SUPPRESS)
    parser.add_argument("drills", nargs="*", help=f"which of {', '.join(DRILLS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = set(args.drills) - set(DRILLS)
    if unknown:
        parser.error(f"unknown drills: {', '.join(sorted(unknown))}")
    if args.serve:
        serve(int(args.serve[0]), args.serve[1])
        return
    started = time.monotonic()
    rows = []
    for name in args.drills or list(DRILLS):
        rows.append(DRILLS[name]())
        print(f"  {name}: done at {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    print(table(rows))
    print(f"\n{time.monotonic() - started:.0f} s; 16 keep-alive clients, cost ${COST} per request, "
          f"store request_timeout {REQUEST_TIMEOUT} s (default), socket_timeout {SOCKET_TIMEOUT} s")


if __name__ == "__main__":
    main()
