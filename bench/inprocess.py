"""In-process benchmark: µs per request through the ASGI apps (no HTTP), and identity extraction cost."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import json
import platform
import pstats
import statistics
import sys
import time
import timeit
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message

from identity_middleware.core.models import IdentityInput
from identity_middleware.core.resolve import identity_from_body
from identity_middleware.stores import Store

from .apps import (
    CHAT_PATH,
    IDENTITIES,
    RedisUnavailable,
    build_app,
    chat_body,
    make_store,
    private_redis,
    source_info,
)
from .floor import build_floor_app

KIB = 1024


def _scope(body: bytes) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": CHAT_PATH, "raw_path": CHAT_PATH.encode(),
        "root_path": "", "query_string": b"", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench"), (b"accept", b"*/*"),
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }


class _Client:
    """A fake server: one request message with the whole body, then a disconnect; responses dropped."""

    def __init__(self, bodies: list[bytes]) -> None:
        self.requests = [(_scope(body), body) for body in bodies]
        self.status = 0

    async def call(self, app: ASGIApp, index: int) -> int:
        template, body = self.requests[index % len(self.requests)]
        scope = dict(template)
        scope["headers"] = list(template["headers"])
        delivered = False

        async def receive() -> Message:
            nonlocal delivered
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        status = 0

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope, receive, send)
        return status


async def _warm(app: ASGIApp, client: _Client) -> None:
    for index in range(500):
        status = await client.call(app, index)
        if status != 200:
            raise RuntimeError(f"the app answered {status}")


async def _batch_us(app: ASGIApp, client: _Client, count: int) -> float:
    """CPU µs per request over ``count`` sequential requests, each in a task of its own as uvicorn
    runs them. Process CPU time, not wall time: the work is single-threaded and CPU-bound, and other
    processes on a shared machine then cost less."""
    loop = asyncio.get_running_loop()
    gc.collect()
    start = time.process_time()
    for index in range(count):
        await loop.create_task(client.call(app, index))
    return (time.process_time() - start) / count * 1e6


def _extraction_us(function: Callable[[bytes], object], body: bytes, repeats: int) -> float:
    """Best-of-``repeats`` µs per call (the least disturbed run, as ``timeit`` advises)."""
    timer = timeit.Timer(lambda: function(body), timer=time.process_time)
    number, _ = timer.autorange()
    number = max(number, 10)
    return min(timer.repeat(repeat=repeats, number=number)) / number * 1e6


def _naive_stdlib(body: bytes) -> IdentityInput | None:
    """What a middleware without msgspec would do: parse the whole body, then validate the identity."""
    data = json.loads(body)
    raw = data.get("identity") if isinstance(data, dict) else None
    return IdentityInput.parse(raw) if raw is not None else None


def _naive_orjson(body: bytes) -> IdentityInput | None:
    import orjson

    data = orjson.loads(body)
    raw = data.get("identity") if isinstance(data, dict) else None
    return IdentityInput.parse(raw) if raw is not None else None


def extraction_table(repeats: int) -> list[str]:
    small, large = chat_body("user_1"), chat_body("user_1", size=100 * KIB)
    assert identity_from_body(large) == _naive_stdlib(large)  # same answer, different cost
    rows: list[tuple[str, Callable[[bytes], object]]] = [
            ("identity_from_body (msgspec, core/resolve.py)", identity_from_body),
            ("json.loads(body) + IdentityInput.parse", _naive_stdlib)]
    with contextlib.suppress(ImportError):
        import orjson  # noqa: F401

        rows.append(("orjson.loads(body) + IdentityInput.parse", _naive_orjson))
    rows.append(("  of which IdentityInput.parse({'id': ...})",
                 lambda _body: IdentityInput.parse({"id": "user_1"})))
    lines = ["| identity extraction | 1 KB body µs | 100 KB body µs | 100 KB − 1 KB µs |", "|---|---:|---:|---:|"]
    msgspec_delta = 0.0
    for name, function in rows:
        one, hundred = _extraction_us(function, small, repeats), _extraction_us(function, large, repeats)
        if function is identity_from_body:
            msgspec_delta = hundred - one
        lines.append(f"| {name} | {one:.1f} | {hundred:.1f} | {hundred - one:.1f} |")
    verdict = "MET" if msgspec_delta <= 100 else "NOT MET"
    lines.append("")
    lines.append(f"target: 100 KB costs no more than 1 KB + 100 µs -> {msgspec_delta:.1f} µs more: {verdict}")
    return lines


@contextlib.contextmanager
def _redis(args: argparse.Namespace) -> Iterator[str | None]:
    if args.store not in ("redis", "all"):
        yield None
    elif args.redis_url:
        yield args.redis_url
    else:
        with private_redis() as url:
            yield url


async def _requests_table(args: argparse.Namespace, redis_url: str | None) -> list[str]:
    kinds = ["memory", "redis"] if args.store == "all" else [args.store]
    apps: dict[str, ASGIApp] = {"bare": build_app(None), "floor": build_floor_app()}
    stores: list[Store] = []
    for kind in kinds:
        try:
            store = make_store(kind, redis_url)
        except RedisUnavailable as error:
            print(f"SKIPPED {kind} store: {error}", file=sys.stderr)
            continue
        assert store is not None
        stores.append(store)
        apps[kind] = build_app(store)
    try:
        return await _timed_requests(args, apps)
    finally:
        for store in stores:  # flush batched settlements and close pools before the loop ends
            await store.aclose()


async def _timed_requests(args: argparse.Namespace, apps: dict[str, ASGIApp]) -> list[str]:
    lines = ["| app | body | µs/request (best) | (median) | batches | µs added (best − bare best) |",
             "|---|---|---:|---:|---|---:|"]
    for size in (1, 100):
        client = _Client([chat_body(identity, size=size * KIB) for identity in IDENTITIES])
        count = args.requests if size == 1 else max(args.requests // 10, 200)
        for app in apps.values():
            await _warm(app, client)
        runs: dict[str, list[float]] = {kind: [] for kind in apps}
        for _ in range(args.repeats):  # interleaved, so a noisy moment hits every app alike
            for kind, app in apps.items():
                runs[kind].append(await _batch_us(app, client, count))
        bare = 0.0
        for kind, batches in runs.items():
            best, median = min(batches), statistics.median(batches)
            if kind == "bare":
                bare = best
            added = "-" if kind == "bare" else f"{best - bare:+.1f}"
            label = kind if kind in ("bare", "floor") else f"{kind} store"
            lines.append(f"| {label} | {size} KB | {best:.1f} | {median:.1f} | "
                         f"{', '.join(f'{b:.1f}' for b in batches)} | {added} |")
    return lines


async def _profile(args: argparse.Namespace, redis_url: str | None) -> str:
    kind = "redis" if args.store == "redis" else "memory"
    store = make_store(kind, redis_url)
    assert store is not None
    app = build_app(store)
    client = _Client([chat_body(identity) for identity in IDENTITIES])
    await _warm(app, client)
    profiler = cProfile.Profile()
    profiler.enable()
    for index in range(args.requests):
        await client.call(app, index)
    profiler.disable()
    await store.aclose()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    out.write(f"cProfile of {args.requests} requests through the {kind} store app (1 KB body)\n")
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(45)
    return out.getvalue()


async def _async_us(make: Callable[[], Any], count: int, repeats: int) -> float:
    """Best-of-``repeats`` µs per await of ``make()`` (a coroutine factory), run in this loop."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(count):
            await make()
        best = min(best, (time.process_time() - start) / count)
    return best * 1e6


async def _breakdown(args: argparse.Namespace) -> list[str]:
    """Where the middleware's µs go on the memory-store path, one component at a time."""
    import anyio

    from identity_middleware.context import Meter, bind, unbind
    from identity_middleware.core.admission import AdmissionRequest, ModelUsage, Settlement, Usage
    from identity_middleware.core.periods import UTC, Period, period_bounds, period_key
    from identity_middleware.stores import MemoryStore
    from identity_middleware.usage import record_usage

    from .apps import COST, INPUT_TOKENS, OUTPUT_TOKENS, prepare_store

    store = MemoryStore()
    prepare_store(store)
    body = chat_body("user_1")
    upsert = identity_from_body(body)
    assert upsert is not None
    ulid = store.retrieve("user_1").id
    admission = AdmissionRequest("user_1", upsert=upsert)
    now = datetime.now(UTC)
    rows: list[tuple[str, float]] = [
        ("identity_from_body(1 KB) (msgspec + IdentityInput.parse)", _extraction_us(identity_from_body, body, 5)),
        ("MemoryStore.admit (body upsert, 1 daily budget, no estimate)",
         _extraction_us(lambda _: store.admit(admission), b"", 5)),
        ("MemoryStore.settle (cost + tokens + model)",
         _extraction_us(lambda _: store.settle(Settlement(ulid, Usage(150_000, 120, 40, {
             "gpt-4o-mini": ModelUsage(1, 150_000, 120, 40)}))), b"", 5)),
        ("  of which period_key(period, now) x4 (one per Period, in _count)",
         _extraction_us(lambda _: [period_key(p, now) for p in Period], b"", 5)),
        ("  period_bounds(DAILY, now) (in _states, per budget)",
         _extraction_us(lambda _: period_bounds(Period.DAILY, now), b"", 5)),
        ("  datetime.now(UTC)", _extraction_us(lambda _: datetime.now(UTC), b"", 5)),
    ]
    count = max(args.requests // 2, 1000)

    async def shielded() -> None:
        with anyio.CancelScope(shield=True):  # noqa: ASYNC100 - the scope's own cost is what is timed
            pass

    async def empty() -> None:
        pass

    overhead = await _async_us(empty, count, 5)
    rows.append(("anyio.CancelScope(shield=True) enter + exit (asyncio)",
                 await _async_us(shielded, count, 5) - overhead))
    identity = store.retrieve("user_1")

    def recorded(_: bytes) -> None:
        token = bind(Meter(identity))
        try:
            record_usage(COST, input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS, model="gpt-4o-mini")
        finally:
            unbind(token)

    rows.append(("Meter() + bind + record_usage + unbind", _extraction_us(recorded, b"", 5)))
    lines = ["| component (memory-store path, 1 KB body) | µs per call (best of 5) |", "|---|---:|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in rows]
    return lines


def _match_breakdown() -> list[str]:
    """What match (CEL) budgets cost per request on the memory store: admission with a team budget
    (membership cached) against none, and what a cache miss costs (every expression evaluated)."""
    from identity_middleware.core.admission import AdmissionRequest
    from identity_middleware.core.budgets import BudgetSpec
    from identity_middleware.core.matching import MatchIndex, variables_of
    from identity_middleware.stores import MemoryStore

    def store_with(expressions: list[str], project: bool = False) -> MemoryStore:
        store = MemoryStore()
        store.create(IdentityInput(id="user_1", metadata={"team": "ml", "plan": "pro"}))
        for expression in expressions:
            store.create_budget(BudgetSpec(scope="match", match=expression, period="monthly", amount="1000000"))
        if project:  # the same work without CEL: one global budget the request falls under
            store.create_budget(BudgetSpec(scope="project", target="apollo", period="monthly", amount="1000000"))
        return store

    team = ['metadata.team == "ml"']
    ten = [f'metadata.team == "team_{n}" && provider == "openai"' for n in range(9)] + team
    request = AdmissionRequest("user_1", model="openai/gpt-4o", project="apollo")
    rows: list[tuple[str, float]] = []
    admit = store_with([], project=True).admit
    rows.append(("MemoryStore.admit, 1 project budget (no CEL: the baseline)",
                 _extraction_us(lambda _: admit(request), b"", 5)))
    for label, expressions in (("1 team budget", team), ("10 match budgets", ten)):
        admit = store_with(expressions).admit
        rows.append((f"MemoryStore.admit, {label} (membership cached)",
                     _extraction_us(lambda _, admit=admit: admit(request), b"", 5)))  # type: ignore[misc]
    for label, expressions in (("1 expression", team), ("10 expressions", ten)):
        store = store_with(expressions)
        identity = store.retrieve("user_1")
        index = MatchIndex(budget for budget, _ in store.list_budgets(limit=200).data)

        def miss(_: bytes, index: MatchIndex = index, identity: Any = identity) -> object:
            return index.evaluated(variables_of(request, identity, {}))

        def hit(_: bytes, index: MatchIndex = index, identity: Any = identity) -> object:
            return index.matched(request, identity, {})

        rows.append((f"a cache miss: variables + evaluate {label}", _extraction_us(miss, b"", 5)))
        rows.append((f"a cache hit: MatchIndex.matched, {label}", _extraction_us(hit, b"", 5)))
    lines = ["| match budgets (memory store) | µs per call (best of 5) |", "|---|---:|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in rows]
    return lines


async def _ablation(args: argparse.Namespace) -> list[str]:
    """µs the middleware adds as its parts are stubbed out one after another (in this process only;
    src/ is not touched): what is left at the end is the middleware's own plumbing."""
    import types
    from unittest import mock

    from identity_middleware import asgi
    from identity_middleware.core import resolve
    from identity_middleware.core.admission import AdmissionRequest
    from identity_middleware.stores import MemoryStore

    from . import apps

    client = _Client([chat_body(identity) for identity in IDENTITIES])
    store = make_store("memory")
    assert store is not None
    admitted = store.admit(AdmissionRequest(IDENTITIES[0]))
    extracted = identity_from_body(chat_body(IDENTITIES[0]))
    steps: list[tuple[str, Any]] = [
        ("the whole memory-store path", None),
        ("- MemoryStore.admit (a constant admission)", mock.patch.object(MemoryStore, "admit",
                                                                          lambda self, request: admitted)),
        ("- MemoryStore.settle (no-op)", mock.patch.object(MemoryStore, "settle", lambda self, settlement: None)),
        ("- anyio.CancelScope(shield=True) around settle", mock.patch.object(
            asgi, "anyio", types.SimpleNamespace(CancelScope=lambda shield: contextlib.nullcontext()))),
        ("- identity_from_body (a constant identity)", mock.patch.object(resolve, "identity_from_body",
                                                                          lambda body: extracted)),
        ("- record_usage in the view (no-op)", mock.patch.object(apps, "record_usage", lambda *a, **k: None)),
    ]
    bare = build_app(None)
    await _warm(bare, client)
    lines = ["| memory-store path, 1 KB body, with ... | µs added (best of batches) | µs this part costs |",
             "|---|---:|---:|"]
    count = max(args.requests // 4, 1000)
    previous: float | None = None
    with contextlib.ExitStack() as patches:
        for label, patch in steps:
            if patch is not None:
                patches.enter_context(patch)
            wrapped = build_app(store)
            await _warm(wrapped, client)
            bare_runs, wrapped_runs = [], []
            for _ in range(args.repeats):
                bare_runs.append(await _batch_us(bare, client, count))
                wrapped_runs.append(await _batch_us(wrapped, client, count))
            added = min(wrapped_runs) - min(bare_runs)
            part = "-" if previous is None else f"{previous - added:.1f}"
            lines.append(f"| {label} | {added:.1f} | {part} |")
            previous = added
    lines.append(f"| (what is left: buffering, replay, Meter, flow plans, routing mark, send wrapper) "
                 f"| {previous:.1f} | |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000, help="requests per batch (1 KB body)")
    parser.add_argument("--repeats", type=int, default=5, help="batches per app")
    parser.add_argument("--store", choices=("memory", "redis", "all"), default="memory")
    parser.add_argument("--redis-url")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the middleware path instead")
    parser.add_argument("--breakdown", action="store_true", help="time the middleware's components one by one")
    parser.add_argument("--ablation", action="store_true",
                        help="µs added as the middleware's parts are stubbed out one after another")
    parser.add_argument("--match", action="store_true", help="what match (CEL) budgets cost per admission")
    args = parser.parse_args(argv)
    if not (1 <= args.requests <= 1_000_000 and 1 <= args.repeats <= 50):
        parser.error("requests 1..1000000, repeats 1..50")
    try:
        with _redis(args) as redis_url:
            if args.profile:
                print(asyncio.run(_profile(args, redis_url)))
                return 0
            if args.breakdown:
                print("\n".join(asyncio.run(_breakdown(args))))
                return 0
            if args.ablation:
                print("\n".join(asyncio.run(_ablation(args))))
                return 0
            if args.match:
                print("\n".join(_match_breakdown()))
                return 0
            print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.python_implementation()} "
                  f"{platform.python_version()}, in-process (fake receive/send, no server), asyncio, process CPU "
                  f"time; {args.repeats} batches of {args.requests} requests (100 KB: "
                  f"{max(args.requests // 10, 200)}); {source_info()}", flush=True)
            print()
            print("\n".join(asyncio.run(_requests_table(args, redis_url))), flush=True)
    except RedisUnavailable as error:
        print(f"redis store: {error}", file=sys.stderr)
        return 3
    print()
    print("\n".join(extraction_table(args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
