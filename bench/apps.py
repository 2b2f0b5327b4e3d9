"""The benchmarked apps (bare Starlette, and wrapped with IdentityMiddleware), their stores and bodies."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from identity_middleware import Budget, IdentityExists, IdentityInput, IdentityMiddleware, Period, record_usage
from identity_middleware.stores import MemoryStore, Store

from .processes import stop

IDENTITIES = tuple(f"user_{n}" for n in range(8))
CHAT_PATH = "/v1/chat/completions"
STATS_PATH = "/bench/stats"
# Large enough that no run of this benchmark ever reaches it: the path measured is "admitted".
DAILY_BUDGET = Decimal("1000000")
COST = Decimal("0.000150")  # what the view records per request
INPUT_TOKENS = 120
OUTPUT_TOKENS = 40

_FILLER = (
    "You are a helpful assistant that answers questions about the weather, travel plans and "
    "restaurant bookings. Keep answers short, cite sources when you can, and never invent facts. "
)


def chat_body(identity: str, *, size: int = 1024) -> bytes:
    """An OpenAI-style chat request of about ``size`` bytes, the identity after the messages
    (the worst place for a parser that stops early; msgspec scans the whole document anyway)."""
    messages: list[dict[str, str]] = []
    payload: dict[str, Any] = {"model": "gpt-4o-mini", "messages": messages, "temperature": 0.2,
                               "identity": {"id": identity}}
    turn = 0
    while len(json.dumps(payload, separators=(",", ":"))) < size - 120:
        role = ("user", "assistant")[turn % 2] if turn else "system"
        messages.append({"role": role, "content": f"[{turn}] " + _FILLER[: min(len(_FILLER), 360)]})
        turn += 1
    body = json.dumps(payload, separators=(",", ":"))
    pad = size - len(body)
    if pad > 0:  # top up the last message so the body is the size asked, within a byte or two
        messages[-1]["content"] += "." * pad
        body = json.dumps(payload, separators=(",", ":"))
    return body.encode()


# -- the endpoint ----------------------------------------------------------------------------------
async def chat_bare(request: Request) -> JSONResponse:
    payload = await request.json()
    return JSONResponse({"id": "chatcmpl-bench", "model": payload.get("model"),
                         "usage": {"prompt_tokens": INPUT_TOKENS, "completion_tokens": OUTPUT_TOKENS}})


async def chat_metered(request: Request) -> JSONResponse:
    """The same view as :func:`chat_bare`, recording the LLM call's usage as a real view would."""
    payload = await request.json()
    record_usage(COST, input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS, model=payload.get("model"))
    return JSONResponse({"id": "chatcmpl-bench", "model": payload.get("model"),
                         "usage": {"prompt_tokens": INPUT_TOKENS, "completion_tokens": OUTPUT_TOKENS}})


def stats_endpoint(store: Store | None) -> Any:
    async def stats(request: Request) -> JSONResponse:
        """Requests and cost the store committed for the bench identities (a sanity check)."""
        if store is None:
            return JSONResponse({"requests": None, "cost": None})
        requests = 0
        cost = Decimal(0)
        for identity in IDENTITIES:
            metrics = await store.ametrics(identity)
            requests += metrics.total_requests
            cost += Decimal(str(metrics.total_cost))
        return JSONResponse({"requests": requests, "cost": str(cost)})

    return stats


def build_app(store: Store | None) -> Starlette:
    """The bare app when ``store`` is None, else the same app with ``IdentityMiddleware(store=store)``
    added the documented way (``app.add_middleware``), so route markers are looked up as in production."""
    routes = [Route(CHAT_PATH, chat_bare if store is None else chat_metered, methods=["POST"]),
              Route(STATS_PATH, stats_endpoint(store), methods=["GET"])]
    if store is None:
        return Starlette(routes=routes)
    return Starlette(routes=routes, middleware=[Middleware(IdentityMiddleware, store=store)])


# -- stores ----------------------------------------------------------------------------------------
def prepare_store(store: Store) -> None:
    """Create the bench identities, each with a daily budget it never reaches (idempotent)."""
    for identity in IDENTITIES:
        with contextlib.suppress(IdentityExists):
            store.create(IdentityInput(id=identity))
        store.set_budget(identity, Budget(period=Period.DAILY, amount=DAILY_BUDGET))


class RedisUnavailable(RuntimeError):
    """The Redis store (or a redis-server to run it on) is not available here."""


def redis_store_class() -> Any:
    """``RedisStore``, imported lazily: it is optional and may not have landed yet."""
    try:
        from identity_middleware.stores import RedisStore
    except (ImportError, AttributeError) as error:
        raise RedisUnavailable(f"identity_middleware.stores.RedisStore is not available yet ({error!r})") from None
    return RedisStore


# Keys of its own, so a shared Redis given with --redis-url is not mixed up; an older revision
# measured in the same run (run.py --before) gets another (its key schema may differ).
REDIS_PREFIX = os.environ.get("IDM_BENCH_PREFIX", "idm-bench")


def redis_store(url: str) -> Store:
    """``RedisStore.from_url(url)`` under the bench's own key prefix; with ``IDM_BENCH_LEASE=1``
    the ``redis-lease`` app: leasing on (``lease=Lease()``, zero-round-trip admission); with
    ``IDM_BENCH_PLAIN=1`` the ``redis-plain`` app: ``multiplex=False``, redis-py's transport alone; with
    ``IDM_BENCH_INLINE=1`` the ``redis-inline`` app: ``writer_thread=False``; with
    ``IDM_BENCH_WAIT=settle`` (``admit``) the ``redis-wait`` (``redis-wait-admit``) app: the WAIT
    guard, ``wait=Wait(1, 0.1)`` (with ``admissions=True``)."""
    options: dict[str, Any] = {}
    if os.environ.get("IDM_BENCH_LEASE") == "1":
        from identity_middleware.stores import Lease  # imported here: older revisions have none

        options["lease"] = Lease()
    if os.environ.get("IDM_BENCH_PLAIN") == "1":  # the redis-plain app: redis-py's transport alone
        options["multiplex"] = False
    if os.environ.get("IDM_BENCH_INLINE") == "1":  # the redis-inline app: no writer thread
        options["writer_thread"] = False
    if (wait := os.environ.get("IDM_BENCH_WAIT")) in ("settle", "admit"):  # redis-wait, redis-wait-admit
        from identity_middleware.stores import Wait

        options["wait"] = Wait(1, 0.1, admissions=wait == "admit")
    store: Store = redis_store_class().from_url(url, prefix=REDIS_PREFIX, **options)
    return store


def make_store(kind: str, redis_url: str | None = None) -> Store | None:
    """``bare`` (no store), ``memory``, ``free`` (bench/free_store.py) or ``redis`` (needs
    ``redis_url``), prepared for the bench."""
    if kind == "bare":
        return None
    if kind == "memory":
        store: Store = MemoryStore()
    elif kind == "free":
        from .free_store import FreeStore

        store = FreeStore()
    elif kind == "redis":
        if not redis_url:
            raise RedisUnavailable("the redis variant needs a Redis URL")
        store = redis_store(redis_url)
    else:
        raise ValueError(f"unknown app kind {kind!r}")
    prepare_store(store)
    return store


SOURCE_ENV = "IDENTITY_BENCH_SOURCE"  # set by run.py --at: the revision src/ was exported from


def source_info() -> str:
    """Which identity_middleware is measured: its path and git commit, and whether src/ has local changes."""
    import identity_middleware

    where = Path(identity_middleware.__file__).resolve().parent
    if os.environ.get(SOURCE_ENV):
        return f"identity_middleware from {where}, exported from {os.environ[SOURCE_ENV]}"
    root = where.parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "src"], capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"identity_middleware from {where} (not a git checkout)"
    return f"identity_middleware from {where} at {head}" + (" + uncommitted changes in src/" if dirty else "")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def private_redis(cpus: str | None = None, *, replica: bool = False) -> Iterator[str]:
    """A throwaway ``redis-server`` on a free loopback port (no persistence), killed on exit; with
    ``replica``, a second one replicating it (what ``WAIT`` waits for)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailable("redis-server not found (apt-get install -y redis-server, or pass --redis-url)")
    directory = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        port = _redis_server(binary, directory / "master", cpus, processes)
        if replica:
            import redis

            copy = _redis_server(binary, directory / "replica", cpus, processes, "--replicaof", "127.0.0.1", str(port))
            deadline = time.monotonic() + 30
            with redis.Redis(port=copy) as client:
                while client.info("replication").get("master_link_status") != "up":
                    if time.monotonic() > deadline:
                        raise RedisUnavailable("the replica did not sync with its master within 30 s")
                    time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        for process in processes:
            stop(process)
        shutil.rmtree(directory, ignore_errors=True)


def _redis_server(binary: str, directory: Path, cpus: str | None, processes: list[subprocess.Popen[bytes]],
                  *extra: str) -> int:
    """Start one ``redis-server`` in ``directory`` (added to ``processes``); its port once it answers PING."""
    directory.mkdir()
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
               "--save", "", "--appendonly", "no", "--logfile", str(directory / "redis.log"), *extra]
    if cpus and shutil.which("taskset"):
        command = ["taskset", "-c", cpus, *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes.append(process)
    deadline = time.monotonic() + 10
    while True:
        if process.poll() is not None:
            raise RedisUnavailable(f"redis-server exited: {(directory / 'redis.log').read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return port
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RedisUnavailable("redis-server did not answer PING within 10 s")
        time.sleep(0.05)
