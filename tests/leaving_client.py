"""An ASGI client that leaves a streamed response after its first chunk, as a client that stops
reading does under uvicorn (ASGI 2.3): its next write never completes and the server reports the
disconnect. Deterministic: no socket buffer decides whether the body was abandoned."""

from __future__ import annotations

from typing import Any

import anyio


async def leave_after_first_chunk(app: Any, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """POST ``body`` (JSON) to ``path`` of ``app``; the first body chunk is all the client reads."""
    gone = anyio.Event()
    received = False
    first = b""

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal first
        if message["type"] == "http.response.body" and message.get("body"):
            first = message["body"]
            gone.set()
            await anyio.sleep_forever()

    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   *((name.lower().encode(), value.encode()) for name, value in headers.items())]
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "server": ("testserver", 80), "client": ("127.0.0.1", 5000), "headers": raw_headers}
    await app(scope, receive, send)
    return first
