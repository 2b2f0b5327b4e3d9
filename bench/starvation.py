"""Starvation drill: four app processes on one $1.00 budget while the host's CPUs are oversubscribed.

    .venv/bin/python -m bench.starvation            # 20 runs, about a minute; loopback only
    .venv/bin/python -m bench.starvation --runs 5 --hogs-per-core 3 --pause 0.4

A slow process is not an outage: with every core shared by busy-loop processes (two per core by
default), four uvicorn apps (RedisStore with its defaults, ``estimates={"/budgeted": "0.01"}``, the
default ``on_store_error="open"``) each receive a burst of 60 concurrent $0.01 requests for one
identity with a $1.00 daily budget. Redis answers throughout, so at most 100 may be admitted; a
request whose admission is merely late must wait (up to the store's ``request_timeout``) or be
refused, never let through untracked. Per run: the answers by status, the 200s the view saw
tracked and untracked, and what Redis recorded. Not a timed test: a benchmark-style drill to run
by hand (the figures depend on the host).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import IO

import httpx

from .drill import Redis, _wait_port, free_port, stop

ESTIMATE = Decimal("0.01")
BUDGET = Decimal("1.00")
PREFIX = "starve"
BURST = 60  # concurrent requests per app process


def build_app(url: str) -> object:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from identity_middleware import IdentityMiddleware, current_identity, record_usage
    from identity_middleware.stores import RedisStore

    async def budgeted(request: Request) -> JSONResponse:
        tracked = current_identity() is not None  # None: let through untracked (the outage policy)
        record_usage(ESTIMATE)
        return JSONResponse({"tracked": tracked})

    store = RedisStore.from_url(url, prefix=PREFIX)  # every option at its default
    return Starlette(routes=[Route("/budgeted", budgeted, methods=["POST"])], middleware=[
        Middleware(IdentityMiddleware, store=store, estimates={"/budgeted": str(ESTIMATE)})])


def serve(port: int, url: str) -> None:
    import uvicorn

    from .serve import default_http, default_loop

    uvicorn.run(build_app(url), host="127.0.0.1", port=port, loop=default_loop(), http=default_http(),  # type: ignore[arg-type]
                access_log=False, log_level="error")


@contextlib.contextmanager
def apps(url: str, count: int, log: IO[bytes]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` uvicorn processes serving :func:`build_app`, their stderr to ``log``; its port is
    each process's ``args[-2]``."""
    processes: list[subprocess.Popen[bytes]] = []
    ports = [free_port() for _ in range(count)]
    try:
        for port in ports:
            processes.append(subprocess.Popen([sys.executable, "-m", "bench.starvation", "--serve", str(port), url],
                                              stderr=log))
        for port, process in zip(ports, processes, strict=True):
            _wait_port(port, process, "the app")
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                stop(process)


@contextlib.contextmanager
def hogs(count: int) -> Iterator[None]:
    """``count`` processes spinning on the CPU at the same priority as the apps."""
    processes = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait(timeout=10)


async def pauses(processes: list[subprocess.Popen[bytes]], seconds: float, done: asyncio.Event) -> None:
    """Until ``done``: every app stopped (SIGSTOP) for ``seconds``, then let run for a quarter of
    that, as an overloaded host or a long GC pause stops a process."""
    while not done.is_set():
        for process in processes:
            os.kill(process.pid, signal.SIGSTOP)
        await asyncio.sleep(seconds)
        for process in processes:
            os.kill(process.pid, signal.SIGCONT)
        await asyncio.sleep(seconds / 4)


async def burst(processes: list[subprocess.Popen[bytes]], identity: str, pause: float,
                ) -> tuple[Counter[str], int, int]:
    """``BURST`` concurrent requests to every app at once, the apps paused now and then meanwhile:
    (statuses, tracked 200s, untracked 200s)."""
    ports = [int(process.args[-2]) for process in processes]  # type: ignore[index]
    statuses: Counter[str] = Counter()
    tracked = untracked = 0
    body = {"identity": {"id": identity}, "messages": [{"role": "user", "content": "hi"}]}
    limits = httpx.Limits(max_connections=BURST * len(ports))
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        async def one(port: int) -> None:
            nonlocal tracked, untracked
            try:
                response = await client.post(f"http://127.0.0.1:{port}/budgeted", json=body)
            except httpx.HTTPError as error:
                statuses[type(error).__name__] += 1
                return
            statuses[str(response.status_code)] += 1
            if response.status_code == 200:
                if response.json()["tracked"]:
                    tracked += 1
                else:
                    untracked += 1

        done = asyncio.Event()
        pausing = asyncio.create_task(pauses(processes, pause, done)) if pause else None
        try:
            await asyncio.gather(*(one(port) for port in ports for _ in range(BURST)))
        finally:
            done.set()
            if pausing is not None:
                await pausing
    return statuses, tracked, untracked


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "REDIS_URL"), help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--apps", type=int, default=4)
    parser.add_argument("--hogs-per-core", type=int, default=2)
    parser.add_argument("--pause", type=float, default=0.0,
                        help="also stop the apps this many seconds at a time during the burst (e.g. 0.4)")
    args = parser.parse_args(argv)
    if args.serve:
        serve(int(args.serve[0]), args.serve[1])
        return
    redis = Redis()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryFile() as log:
        worst = runs(redis, args, cores, log)
        log.seek(0)
        logged = Counter(line.strip() for line in log.read().decode(errors="replace").splitlines()
                         if re.match(r"[\w.]+(Error|Exception|Warning)\b|identity store", line.strip()))
    for line, count in logged.most_common(8):
        print(f"  logged x{count}: {line[:160]}")
    paused = f", apps stopped {args.pause} s at a time" if args.pause else ""
    print(f"\n{args.runs} runs, {args.apps} apps x {BURST} concurrent ${ESTIMATE} requests on one ${BUDGET} budget, "
          f"{cores * args.hogs_per_core} busy loops on {cores} cores{paused}: most admitted in a run {worst} "
          f"({'OK' if worst <= BUDGET / ESTIMATE else 'OVER BUDGET'}, at most {BUDGET / ESTIMATE:.0f})")


def runs(redis: Redis, args: argparse.Namespace, cores: int, log: IO[bytes]) -> int:
    """Print each run's figures; the most admitted in one run."""
    from identity_middleware import Budget, IdentityInput, Period
    from identity_middleware.stores import RedisStore

    worst = 0
    try:
        admin = RedisStore.from_url(redis.url, prefix=PREFIX)
        for run in range(1, args.runs + 1):
            identity = f"shared_{run}"
            admin.create(IdentityInput(id=identity))
            admin.set_budget(identity, Budget(period=Period.DAILY, amount=BUDGET))
            # Fresh processes each run: the burst meets cold connections, as after a deploy.
            with apps(redis.url, args.apps, log) as processes, hogs(cores * args.hogs_per_core):
                started = time.monotonic()
                statuses, tracked, untracked = asyncio.run(burst(processes, identity, args.pause))
                seconds = time.monotonic() - started
            status = admin.budget_status(identity)[0]  # the apps have stopped: their usage is written
            admitted = statuses["200"]
            worst = max(worst, admitted)
            answers = " ".join(f"{code}: {count}" for code, count in sorted(statuses.items()))
            print(f"run {run:2}: admitted {admitted:3} (tracked {tracked}, untracked {untracked}); {answers}; "
                  f"redis spent ${status.spent} reserved ${status.reserved}; {seconds:.1f} s", flush=True)
        admin.close()
    finally:
        redis.close()
    return worst


if __name__ == "__main__":
    main()
