"""The floor: the least any body-reading identity middleware must do, as a reference beside ``bare``.

A pure ASGI middleware that buffers the JSON body, takes ``identity.id`` out of it with msgspec,
binds it in a context variable for the view, and replays the body unchanged; no store, no
budget, no usage. What ``IdentityMiddleware`` costs beyond this is its own bookkeeping.
"""

from __future__ import annotations

from contextvars import ContextVar

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .apps import CHAT_PATH, STATS_PATH, chat_bare, stats_endpoint

IDENTITY: ContextVar[str | None] = ContextVar("bench_floor_identity", default=None)


class _Identity(msgspec.Struct):
    id: str = ""


class _Envelope(msgspec.Struct):
    identity: _Identity | None = None


_decode = msgspec.json.Decoder(_Envelope).decode


class BodyFloor:
    """Buffer, parse and replay the body; bind the identity it names."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        message = await receive()
        while True:
            chunks.append(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
            message = await receive()
        body = b"".join(chunks)
        try:
            envelope = _decode(body)
        except msgspec.DecodeError:
            envelope = _Envelope()
        pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        token = IDENTITY.set(envelope.identity.id if envelope.identity else None)
        try:
            await self.app(scope, replay, send)
        finally:
            IDENTITY.reset(token)


def build_floor_app() -> Starlette:
    """The bare app's routes behind :class:`BodyFloor`."""
    routes = [Route(CHAT_PATH, chat_bare, methods=["POST"]), Route(STATS_PATH, stats_endpoint(None), methods=["GET"])]
    return Starlette(routes=routes, middleware=[Middleware(BodyFloor)])
