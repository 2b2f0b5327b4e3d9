"""Memory and time per caller stay bounded: idle rate-limit windows are reclaimed a few per request
(never all at once inside one), a trickled body gets 408."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest

from identity_middleware import IdentityMiddleware
from identity_middleware.ratelimit import SWEEP_SLICE, RateLimiter
from identity_middleware.stores import MemoryStore

IDLE = 10_000  # ids idle for longer than their window, waiting to be swept


def test_idle_ids_rate_limit_windows_are_reclaimed() -> None:
    now = [0.0]  # the limiter's clock for idleness (the windows themselves are the limits library's)
    limiter = RateLimiter("2/second;2/minute", clock=lambda: now[0])
    ids = [uuid.uuid4().hex for _ in range(5000)]
    for external_id in ids:
        limiter.hit(external_id)
    limiter.hit(ids[0])
    assert limiter.hit(ids[0]) is not None  # the third hit in a minute is refused, however slow the host
    assert limiter.tracked_ids == 5000
    limiter.sweep(30.0)  # idle for less than the longest window (a minute): kept
    assert limiter.tracked_ids == 5000 and limiter.hit(ids[0]) is not None
    limiter.sweep(61.0)
    assert limiter.tracked_ids == 0
    assert limiter.hit(ids[0]) is None  # its window is gone with it


def test_recently_seen_ids_survive_a_sweep() -> None:
    now = [0.0]
    limiter = RateLimiter("1/minute", clock=lambda: now[0])
    limiter.hit("old")
    now[0] = 61.0
    limiter.sweep(now[0])  # "old" idle for longer than its window
    limiter.hit("new")
    limiter.sweep(now[0] + 1)
    assert limiter.tracked_ids == 1 and limiter.hit("new") is not None


def test_a_hit_clears_at_most_a_slice_of_idle_ids() -> None:
    now = [0.0]
    limiter = RateLimiter("100/minute", clock=lambda: now[0])
    for index in range(IDLE):
        limiter.hit(f"idle-{index}")
    now[0] += 61  # every one of them idle for longer than the window
    for count in range(1, 50):
        limiter.hit(f"new-{count}")  # one new id, and at most SWEEP_SLICE idle ones cleared per hit
        assert limiter.tracked_ids == IDLE + count - SWEEP_SLICE * count


def test_the_sweep_of_idle_ids_keeps_up_a_slice_at_a_time() -> None:
    now = [0.0]
    limiter = RateLimiter("100/minute", clock=lambda: now[0])
    for index in range(IDLE):
        limiter.hit(f"idle-{index}")
    now[0] += 61
    hits = -(-IDLE // (SWEEP_SLICE - 1))  # each hit adds one id and clears SWEEP_SLICE
    for count in range(hits):
        limiter.hit(f"new-{count}")
    assert limiter.tracked_ids == hits  # only the ids of the last window are left
    assert limiter.hit("idle-0") is None  # its window went with it


def test_an_id_seen_again_is_not_swept_with_the_idle_ones() -> None:
    now = [0.0]
    limiter = RateLimiter("1/minute", clock=lambda: now[0])
    limiter.hit("old")
    limiter.hit("regular")
    now[0] += 50
    assert limiter.hit("regular") is not None  # still in its window: refused, and seen again
    now[0] += 20  # "old" idle for 70 s, "regular" for 20 s
    limiter.sweep(now[0])
    assert limiter.tracked_ids == 1 and limiter.hit("regular") is not None


@pytest.mark.anyio
async def test_a_trickled_json_body_is_answered_408_without_calling_the_app() -> None:
    called: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append(True)

    middleware = IdentityMiddleware(app, store=MemoryStore(), body_timeout=0.3)
    sent: list[dict[str, Any]] = []

    async def trickle() -> dict[str, Any]:
        await anyio.sleep(0.05)  # one byte every 50 ms, for ever
        return {"type": "http.request", "body": b" ", "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-type", b"application/json")]}
    with anyio.fail_after(30):  # a bound 100 times body_timeout, against hanging; 408 comes after body_timeout
        await middleware(scope, trickle, send)
    assert sent[0]["status"] == 408 and b"request_timeout" in sent[1]["body"] and not called


@pytest.mark.anyio
async def test_a_body_in_several_prompt_chunks_is_not_timed_out() -> None:
    received: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            received.append(message["body"])
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    chunks = [b'{"identity": ', b'{"id": "u"}', b"}"]
    messages = [{"type": "http.request", "body": c, "more_body": i < 2} for i, c in enumerate(chunks)]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    middleware = IdentityMiddleware(app, store=MemoryStore(), body_timeout=5)
    await middleware({"type": "http", "method": "POST", "path": "/",
                      "headers": [(b"content-type", b"application/json")]}, receive, send)
    assert sent[0]["status"] == 200 and b"".join(received) == b"".join(chunks)
    assert middleware.store.metrics("u").total_requests == 1
