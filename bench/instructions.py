"""Instructions per request, counted by valgrind: the steady measure of what the middleware adds.

Timings on a shared VM move by 2x from hour to hour and by 10-30 % between rounds of one run; the
number of machine instructions a request executes does not. Each app serves ``--requests``
requests in-process (no server, no network), once and then three times as many, each run under
``valgrind --tool=cachegrind``; the difference divided by the extra requests is the cost of one
request, start-up excluded. Instructions are not time (cache misses and the garbage collector's
pauses are not in them), so the HTTP runs of ``bench.run`` still decide the ratios; this one says,
without noise, whether a change made a path cheaper or dearer.

    apt-get install -y valgrind
    .venv/bin/python -m bench.instructions --before ed54c1c             # asgi, flask, django
    .venv/bin/python -m bench.instructions --scenario asgi --requests 1000
    .venv/bin/python -m bench.instructions --scenario asgi --store redis --in-flight 32 --before daeea84
    .venv/bin/python -m bench.instructions --scenario asgi --store redis-lease --before daeea84

``--in-flight K`` serves the ASGI app's requests K at a time (K tasks, as a server with K connections
does): a store that batches or counts its buffered writes works as it does under load, which one
request at a time never shows.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .apps import CHAT_PATH, IDENTITIES, build_app, chat_body, make_store, private_redis, source_info
from .revisions import REPO, export

SCENARIOS = ("asgi", "flask", "django")
STORES = ("memory", "free", "redis", "redis-lease")
REDIS_URL_ENV = "IDM_BENCH_REDIS_URL"  # the same variable the WSGI apps read
IN_FLIGHT_ENV = "IDM_BENCH_IN_FLIGHT"  # the ASGI child's requests in flight at once (--in-flight)
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


# -- the child: N requests through one app, in this process ------------------------------------------
def _asgi_requests(kind: str) -> Callable[[int], None]:
    from .inprocess import _Client

    client = _Client([chat_body(identity) for identity in IDENTITIES])
    store = make_store(kind, os.environ.get(REDIS_URL_ENV))
    app = build_app(store)

    in_flight = int(os.environ.get(IN_FLIGHT_ENV, "1"))

    async def one_at_a_time(first: int, count: int) -> None:
        loop = asyncio.get_running_loop()
        for index in range(first, first + count):  # each request in a task of its own, as uvicorn runs them
            status = await loop.create_task(client.call(app, index))
            if status != 200:
                raise RuntimeError(f"the app answered {status}")

    async def serve(count: int) -> None:
        share, extra = divmod(count, in_flight)
        await asyncio.gather(*(one_at_a_time(worker * share, share + (worker < extra)) for worker in range(in_flight)))
        if store is not None:
            await store.aflush()  # what the batch wrote belongs to it

    return lambda count: asyncio.run(serve(count))


def _wsgi_requests(scenario: str, kind: str) -> Callable[[int], None]:
    os.environ["IDM_BENCH_APP"] = kind  # the app builds its store from these (bench/wsgi_apps.py)
    if scenario == "flask":
        from .wsgi_apps import create

        app: Any = create()
    else:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.django_site")
        import django
        from django.core.wsgi import get_wsgi_application

        django.setup()
        app = get_wsgi_application()
    bodies = [chat_body(identity) for identity in IDENTITIES]

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        if not status.startswith("200"):
            raise RuntimeError(f"the app answered {status}")

    def serve(count: int) -> None:
        for index in range(count):
            body = bodies[index % len(bodies)]
            environ = {"REQUEST_METHOD": "POST", "PATH_INFO": CHAT_PATH, "SCRIPT_NAME": "", "QUERY_STRING": "",
                       "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
                       "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
                       "HTTP_HOST": "127.0.0.1:8000", "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http",
                       "wsgi.errors": sys.stderr, "wsgi.version": (1, 0), "wsgi.multithread": False,
                       "wsgi.multiprocess": False, "wsgi.run_once": False}
            result = app(environ, start_response)
            for _ in result:
                pass
            close = getattr(result, "close", None)
            if close is not None:
                close()

    return serve


def child(scenario: str, kind: str, count: int) -> None:
    serve = _asgi_requests(kind) if scenario == "asgi" else _wsgi_requests(scenario, kind)
    serve(300)  # warm: caches filled, every code path imported
    serve(count)


# -- the parent: valgrind around children -------------------------------------------------------------
def _instructions(scenario: str, kind: str, count: int, tree: Path | None, tag: str | None,
                  in_flight: int = 1) -> int:
    env = dict(os.environ)
    env[IN_FLIGHT_ENV] = str(in_flight)
    env["IDM_BENCH_PREFIX"] = f"idm-bench-{scenario}-{kind}-{tag or 'here'}-{count}"
    if kind == "redis-lease":  # the redis app with leasing on, as bench.run's redis-lease (bench/apps.py)
        env["IDM_BENCH_LEASE"], kind = "1", "redis"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree / "src") if tree else None, str(REPO),
                                                      env.get("PYTHONPATH")]))
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
               sys.executable, "-m", "bench.instructions", "--child", scenario, kind, str(count)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800, check=False)
    found = _REFS.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{scenario} {kind}: valgrind failed ({done.returncode}): {done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_request(scenario: str, kind: str, count: int, tree: Path | None, tag: str | None,
                in_flight: int = 1) -> int:
    """Instructions of one request: (3N requests - N requests) / 2N, start-up and warm-up cancelled out."""
    more, fewer = (_instructions(scenario, kind, n, tree, tag, in_flight) for n in (3 * count, count))
    return (more - fewer) // (2 * count)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", metavar="REV", help="also count the store apps on src/ as committed at REV")
    parser.add_argument("--scenario", default=",".join(SCENARIOS), help="comma-separated, of asgi, flask, django")
    parser.add_argument("--store", default="memory",
                        help="comma-separated, of memory, free (bench/free_store.py), redis (a private redis-server), "
                             "redis-lease (the same with leasing)")
    parser.add_argument("--requests", type=int, default=1000, help="N: runs of N and 3N requests per app")
    parser.add_argument("--in-flight", type=int, default=1,
                        help="asgi: requests served at once (tasks), as a server with that many connections")
    parser.add_argument("--child", nargs=3, metavar=("SCENARIO", "KIND", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return 0
    scenarios = [name for name in args.scenario.split(",") if name]
    stores = [name for name in args.store.split(",") if name]
    if unknown := (set(scenarios) - set(SCENARIOS)) | (set(stores) - set(STORES)):
        parser.error(f"unknown scenario or store {sorted(unknown)}")
    if shutil.which("valgrind") is None:
        print("valgrind not found (apt-get install -y valgrind)", file=sys.stderr)
        return 3
    with tempfile.TemporaryDirectory(prefix="bench-src-") as tmp, contextlib.ExitStack() as stack:
        if {"redis", "redis-lease"} & set(stores):  # each app its own key prefix: the revisions' key schemas differ
            os.environ[REDIS_URL_ENV] = stack.enter_context(private_redis())
        before = export(args.before, Path(tmp)) if args.before else None
        jobs: dict[tuple[str, str, str | None], Path | None] = {(name, "bare", None): None for name in scenarios}
        for scenario in scenarios:
            for store in stores:
                jobs[(scenario, store, None)] = None
                if before is not None:
                    jobs[(scenario, store, before[0])] = before[1]
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            futures = {key: pool.submit(per_request, key[0], key[1], args.requests, tree, key[2], args.in_flight)
                       for key, tree in jobs.items()}
            counts = {key: future.result() for key, future in futures.items()}
    print(f"{source_info()}; valgrind cachegrind, instructions per request (runs of {args.requests} and "
          f"{3 * args.requests} requests in-process, {args.in_flight} in flight, 1 KB chat body, a daily budget, "
          "usage recorded)\n")
    label = f" @{before[0]}" if before else ""
    print("| scenario | app | instructions/request | added to bare |" + (f" {label.strip()} | added{label} |"
                                                                          if before else ""))
    print("|---|---|---:|---:|" + ("---:|---:|" if before else ""))
    for scenario in scenarios:
        bare = counts[(scenario, "bare", None)]
        print(f"| {scenario} | bare | {bare:,} | |" + (" | |" if before else ""))
        for store in stores:
            mine = counts[(scenario, store, None)]
            row = f"| {scenario} | {store} | {mine:,} | {mine - bare:,} |"
            if before:
                old = counts[(scenario, store, before[0])]
                row += f" {old:,} | {old - bare:,} |"
            print(row)
    return 0

if __name__ == "__main__":
    sys.exit(main())
