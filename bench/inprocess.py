"""In-process benchmark: µs per request through the ASGI apps (no HTTP), and identity extraction cost."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import platform
import pstats
import statistics
import sys
import time
import timeit
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

from starlette.types import ASGIApp, Message

from identity_middleware.core.models import IdentityInput
from identity_middleware.core.resolve import identity_from_body

from .apps import CHAT_PATH, IDENTITIES, RedisUnavailable, build_app, chat_body, make_store, private_redis

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


async def _per_request_us(app: ASGIApp, client: _Client, count: int, repeats: int) -> list[float]:
    """µs per request of ``repeats`` batches of ``count`` sequential requests (after a warm-up)."""
    for index in range(min(count, 500)):
        status = await client.call(app, index)
        if status != 200:
            raise RuntimeError(f"the app answered {status}")
    batches = []
    for _ in range(repeats):
        start = time.perf_counter()
        for index in range(count):
            await client.call(app, index)
        batches.append((time.perf_counter() - start) / count * 1e6)
    return batches


def _extraction_us(function: Callable[[bytes], object], body: bytes, repeats: int) -> float:
    """Best-of-``repeats`` µs per call (the least disturbed run, as ``timeit`` advises)."""
    timer = timeit.Timer(lambda: function(body))
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
    rows = [("identity_from_body (msgspec, core/resolve.py)", identity_from_body),
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
    apps: dict[str, ASGIApp] = {"bare": build_app(None)}
    for kind in kinds:
        try:
            apps[kind] = build_app(make_store(kind, redis_url))
        except RedisUnavailable as error:
            print(f"SKIPPED {kind} store: {error}", file=sys.stderr)
    lines = ["| app | body | µs/request (median) | batches | µs added by the middleware |",
             "|---|---|---:|---|---:|"]
    for size in (1, 100):
        client = _Client([chat_body(identity, size=size * KIB) for identity in IDENTITIES])
        bare = 0.0
        for kind, app in apps.items():
            count = args.requests if size == 1 else max(args.requests // 10, 200)
            batches = await _per_request_us(app, client, count, args.repeats)
            median = statistics.median(batches)
            if kind == "bare":
                bare = median
            added = "-" if kind == "bare" else f"{median - bare:+.1f}"
            label = "bare" if kind == "bare" else f"{kind} store"
            lines.append(f"| {label} | {size} KB | {median:.1f} | {', '.join(f'{b:.1f}' for b in batches)} | {added} |")
    return lines


async def _profile(args: argparse.Namespace, redis_url: str | None) -> str:
    kind = "redis" if args.store == "redis" else "memory"
    app = build_app(make_store(kind, redis_url))
    client = _Client([chat_body(identity) for identity in IDENTITIES])
    await _per_request_us(app, client, 500, 1)  # warm caches before profiling
    profiler = cProfile.Profile()
    profiler.enable()
    for index in range(args.requests):
        await client.call(app, index)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    out.write(f"cProfile of {args.requests} requests through the {kind} store app (1 KB body)\n")
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(45)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000, help="requests per batch (1 KB body)")
    parser.add_argument("--repeats", type=int, default=5, help="batches per app")
    parser.add_argument("--store", choices=("memory", "redis", "all"), default="memory")
    parser.add_argument("--redis-url")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the middleware path instead")
    args = parser.parse_args(argv)
    if not (1 <= args.requests <= 1_000_000 and 1 <= args.repeats <= 50):
        parser.error("requests 1..1000000, repeats 1..50")
    try:
        with _redis(args) as redis_url:
            if args.profile:
                print(asyncio.run(_profile(args, redis_url)))
                return 0
            print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.python_implementation()} "
                  f"{platform.python_version()}, in-process (fake receive/send, no server), asyncio; "
                  f"{args.repeats} batches of {args.requests} requests (100 KB: {max(args.requests // 10, 200)})",
                  flush=True)
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
