"""What a request holds while it waits for the store: few objects, and none of them closures.

A performance guard, so it lives here and not in the test spec (issue 22)::

    .venv/bin/python -m bench.gc_footprint      # prints what each waiting request holds; exit 1 over the bound

Every object a waiting request holds is promoted by the young collections it lives through, and
promotions bring the next full collection of the whole heap nearer: tens of milliseconds during
which the server answers nobody (bench/README.md, "Garbage collection"). This counts what
the middleware itself holds per waiting request, so a closure or a coroutine layer added to the
request path shows up here rather than as a worse p99 in the next benchmark.
"""

from __future__ import annotations

import asyncio
import gc
import json
import types
from collections import Counter
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import identity_middleware
from identity_middleware import IdentityMiddleware, record_usage
from identity_middleware.core.admission import Admission, AdmissionRequest
from identity_middleware.stores import MemoryStore

OURS = identity_middleware.__path__[0]
WAITING = 24
# What the middleware holds per waiting request today: its __call__ coroutine, the flow's plan
# generator and driver coroutine, the request's replay and header lookup, the flow's Request,
# Resolved, AdmissionRequest and Admit. A little room, none for a new layer per request.
MOST_PER_REQUEST = 10
_CODE = {types.FunctionType: "__code__", types.CoroutineType: "cr_code", types.GeneratorType: "gi_code"}


class WaitingStore(MemoryStore):
    """A MemoryStore whose async admission waits until the test lets it go (as a request waits for Redis)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = 0
        self.expected = 0
        self.all_waiting = asyncio.Event()

    async def aadmit(self, request: AdmissionRequest) -> Admission:
        self.waiting += 1
        if self.waiting >= self.expected:
            self.all_waiting.set()
        await self.gate.wait()
        return self.admit(request)


async def chat(request: Request) -> JSONResponse:
    record_usage("0.0001", input_tokens=3, output_tokens=2, model="gpt-4o-mini")
    return JSONResponse({"ok": True})


def ours(thing: object) -> str | None:
    """The name of ``thing`` if the middleware's code made it (our classes' instances, and our
    functions, coroutines and generators), else ``None``."""
    kind = type(thing)  # not isinstance(): it would ask a lazy object (Django's) for its __class__
    if kind is types.FunctionType or kind is types.CoroutineType or kind is types.GeneratorType:
        code: types.CodeType = getattr(thing, _CODE[kind])
        return f"{kind.__name__} {code.co_qualname}" if code.co_filename.startswith(OURS) else None
    module = kind.__dict__.get("__module__")  # a metaclass's instances (classes) have none
    return kind.__qualname__ if isinstance(module, str) and module.startswith("identity_middleware.") else None


def census() -> Counter[str]:
    gc.collect()
    return Counter(name for thing in gc.get_objects() if (name := ours(thing)) is not None)


async def call(app: Any, identity: str) -> int:
    body = json.dumps({"model": "gpt-4o-mini", "identity": {"id": identity}}).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/chat", "raw_path": b"/chat", "root_path": "", "query_string": b"", "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80), "headers": [(b"content-type", b"application/json"),
                                                      (b"content-length", str(len(body)).encode())]}
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    status = 0

    async def receive() -> dict[str, Any]:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def measure() -> tuple[Counter[str], list[int]]:
    store = WaitingStore()
    app = Starlette(routes=[Route("/chat", chat, methods=["POST"])])
    app.add_middleware(IdentityMiddleware, store=store)
    store.gate.set()
    store.expected = 1
    assert await call(app, "warm-up") == 200  # the middleware stack built, the identity known
    store.gate.clear()
    store.all_waiting.clear()
    before = census()
    store.expected = store.waiting + WAITING
    tasks = [asyncio.ensure_future(call(app, f"user-{index % 4}")) for index in range(WAITING)]
    await store.all_waiting.wait()
    during = census() - before
    store.gate.set()
    return during, list(await asyncio.gather(*tasks))


def main() -> int:
    during, statuses = asyncio.run(measure())
    if statuses != [200] * WAITING:
        print(f"not every request went through once let go: {statuses}")
        return 1
    # What most waiting requests hold (a few objects another thread makes meanwhile are not)
    per_request = {name: count / WAITING for name, count in during.items() if count >= WAITING // 2}
    for name, count in sorted(per_request.items()):
        print(f"{count:5.2f}  {name}")
    total = sum(per_request.values())
    closures = [name for name in per_request if name.startswith("function ")]
    print(f"{total:.2f} objects of ours per waiting request (bound {MOST_PER_REQUEST}); closures: {closures or 'none'}")
    return 0 if total <= MOST_PER_REQUEST and not closures else 1


if __name__ == "__main__":
    raise SystemExit(main())
