"""``IdentityMiddleware``: pure ASGI; reads the request for the flow, sends its refusals, meters the app."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import Config, InvalidOption, Options
from .context import finalise_abandoned_outside_requests
from .core.errors import ErrorResponse, RequestBudgetExceeded, StoreMisconfigured, request_timeout
from .core.resolve import is_json_content_type
from .core.signing import SIGNATURE_HEADER
from .flow import Flow, JsonBody, Mark, Refused, Request, Tracked, header_text
from .flow.headers import budget_headers, cost_known
from .flow.life import RequestLife
from .flow.request import header_map
from .flow.steps import Notices, annotate
from .starlette import find_mark
from .stores.startup import astore_ready

if TYPE_CHECKING:
    from typing import Unpack

__all__ = ["IdentityMiddleware"]

logger = logging.getLogger("identity_middleware")

_ROUTE_CACHE_SIZE = 4096
_CONTENT_TYPE_CACHE_SIZE = 64


def _user_id(user: Any) -> str | None:
    """The id of an authenticated Starlette user (``identity``, else ``username``)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    try:
        value = user.identity
    except (NotImplementedError, AttributeError):
        value = getattr(user, "username", None)
    return value if isinstance(value, str) and value else None


async def _send_error(send: Send, error: ErrorResponse) -> None:
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(name.encode("latin-1"), value.encode("latin-1")) for name, value in error.headers]})
    await send({"type": "http.response.body", "body": error.body})


class IdentityMiddleware:
    """Add to any ASGI app: ``app.add_middleware(IdentityMiddleware, store=...)``; the keyword
    options are :class:`~identity_middleware.config.Options` (typed: a type checker lists them).

    Per request: the identity comes from the JSON body (``identity`` / ``orq.identity``), an
    identity header, or the auth context (``scope["user"]``, then ``resolver(scope)``); it is
    validated (400), rate limited and budget-checked (429), attached as
    ``request.state.identity`` and ``current_identity()``, and the usage recorded with
    ``record_usage`` is committed once when the response ends. Only JSON bodies up to
    ``max_body_size`` are read, and they are replayed to the app unchanged; everything else
    streams through untouched. Websocket and lifespan scopes pass through (the store is flushed
    at lifespan shutdown).

    Invalid options raise :class:`~identity_middleware.config.InvalidOption` where the app is
    built. Starlette builds its middleware on the first ASGI call (the lifespan's), where a
    server may take an exception for "lifespan unsupported" and serve on: there the error is
    reported as ``lifespan.startup.failed``, so the server stops at startup with the message.
    """

    def __init__(self, app: ASGIApp, **options: Unpack[Options]) -> None:
        self.app = app
        self.invalid: InvalidOption | None = None
        try:
            self.config = Config.of(**options)
        except InvalidOption as error:
            if not _serving():
                raise
            self.invalid = error  # reported at lifespan startup (and raised by any request)
            self.config = Config()
        self.flow = Flow(self.config)
        self.store = self.config.store
        session = self.config.session
        self._header_keys = {name: name.lower().encode("latin-1")
                             for name in (*self.config.header_names, SIGNATURE_HEADER, *self.config.fact_headers,
                                          *((session.header,) if session is not None and session.header else ()))}
        self._marks: dict[tuple[str, str], Mark | None] = {}
        self._json_types: dict[bytes, bool] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The request is handled here, not in a coroutine of its own: every object a request holds
        # while it waits (for Redis, for the app) is one more for the garbage collector to promote
        # and, at its next full collection, to walk (see bench/README.md, "Garbage collection").
        if scope["type"] == "http":
            if self.invalid is not None:
                raise self.invalid
            try:
                body, receive = await self._read_body(scope, receive)
            except TimeoutError:  # a body trickled slower than body_timeout is not held open without end
                await _send_error(send, request_timeout(self.config.body_timeout or 0))
                return
            lookup = _Lookup(self._header_keys, self.config.resolver, scope, self.flow.notices)
            plan = self.flow.admission(Request(body, lookup, scope["path"], self._mark(scope), scope, _headers))
            outcome = await self.flow.arun(plan, lookup.auth if self.flow.wants_auth else None)
            annotate(outcome)
            if isinstance(outcome, Tracked):  # the usual outcome, asked first
                finalise_abandoned_outside_requests()
                meter = outcome.meter
                life = RequestLife(self.flow, meter)
                scope["state"] = {**scope.get("state", {}), "identity": meter.identity}
                reply = _HeadersSend(send, life) if self.config.budget_headers else _StatusSend(send, life)
                try:
                    await life.acall(self.app, scope, receive, reply)
                except RequestBudgetExceeded as error:  # a ceiling the view did not catch (settled as an
                    if reply.started:                   # error): 429, if still possible
                        raise
                    life.answered(429)
                    await _send_error(send, error.response)
            elif isinstance(outcome, Refused):
                await _send_error(send, outcome.error)
            else:
                await RequestLife(self.flow, outcome).acall(self.app, scope, receive, send)
        elif scope["type"] == "lifespan":
            if self.invalid is not None:  # the server stops here, with the options' problems
                await receive()
                await send({"type": "lifespan.startup.failed", "message": str(self.invalid)})
                raise self.invalid  # as Starlette's router does after a failed startup
            await self.app(scope, receive, self._lifespan_send(send))
        else:
            await self.app(scope, receive, send)

    # -- the app's life: options refused at startup, pending usage flushed at shutdown ---------------
    def _lifespan_send(self, send: Send) -> Send:
        failed = False

        async def lifespan_send(message: Message) -> None:
            nonlocal failed
            if failed:
                return  # the server has been told; what the app says of the error it raised is dropped
            if message["type"] == "lifespan.startup.complete":
                try:
                    await astore_ready(self.store)  # an unreachable store is logged, and the app starts
                except StoreMisconfigured as error:  # a store that can never work stops the start, in words
                    failed = True
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    raise  # and the app's lifespan ends (the server exits on the message above)
            elif message["type"] == "lifespan.shutdown.complete":
                try:
                    await self.store.aflush()  # usage held back by a batching store is written now
                except Exception:
                    logger.exception("identity store: flushing pending usage at shutdown failed")
            await send(message)

        return lifespan_send

    # -- reading the request ---------------------------------------------------------------------
    async def _read_body(self, scope: Scope, receive: Receive) -> tuple[bytes | None, Receive]:
        """The JSON body when the flow wants it, and the ``receive`` that replays what was read."""
        content_type = content_length = None
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value
            elif key == b"content-length":
                content_length = value
        limit = self.config.max_body_size
        if content_type is None or not self._json_type(content_type) \
                or not JsonBody.within(None if content_length is None else content_length.decode("latin-1"), limit):
            return None, receive
        message = await receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            # The usual case: the whole body in one message, replayed as it came, with no timer to pay for.
            body = message.get("body", b"")
            return (body if len(body) <= limit else None), _Replay(message, receive)
        reader = JsonBody(limit)
        # The clock starts with the first chunk: the rest must arrive within body_timeout.
        with anyio.fail_after(self.config.body_timeout):
            while True:
                if message["type"] != "http.request":  # a disconnect while reading: replay, then it
                    head = reader.read_so_far()
                    return None, (_Replay(_request(head, more_body=True), _Replay(message, receive)) if head
                                  else _Replay(message, receive))
                within = reader.feed(message.get("body", b""))
                if not message.get("more_body", False):
                    return reader.body(), _Replay(_request(reader.read_so_far(), more_body=False), receive)
                if not within:
                    return None, _Replay(_request(reader.read_so_far(), more_body=True), receive)
                message = await receive()

    def _json_type(self, content_type: bytes) -> bool:
        """``is_json_content_type``, remembered for the few content types a server sees."""
        found = self._json_types.get(content_type)
        if found is None:
            found = is_json_content_type(content_type.decode("latin-1"))
            if len(self._json_types) < _CONTENT_TYPE_CACHE_SIZE:
                self._json_types[content_type] = found
        return found

    def _mark(self, scope: Scope) -> Mark | None:
        """The ``@budgeted`` mark of the endpoint this request will reach (Starlette routing)."""
        router = getattr(scope.get("app"), "router", None)
        if router is None:
            return None
        key = (scope["method"], scope["path"])
        try:
            return self._marks[key]
        except KeyError:
            found = self._marks[key] = find_mark(getattr(router, "routes", ()), scope)
            if len(self._marks) > _ROUTE_CACHE_SIZE:
                self._marks.clear()
            return found


def _request(body: bytes, *, more_body: bool) -> Message:
    return {"type": "http.request", "body": body, "more_body": more_body}


class _Replay:
    """A ``receive`` that answers ``message`` first, then the server's. A plain object rather than
    a closure: fewer objects alive per request (see :meth:`IdentityMiddleware.__call__`)."""

    __slots__ = ("message", "receive")

    def __init__(self, message: Message, receive: Receive) -> None:
        self.message: Message | None = message
        self.receive = receive

    async def __call__(self) -> Message:
        message = self.message
        if message is not None:
            self.message = None
            return message
        return await self.receive()


class _StatusSend:
    """The app's ``send``: passes every message on and tells the request's life the status it answered."""

    __slots__ = ("life", "send", "started")

    def __init__(self, send: Send, life: RequestLife) -> None:
        self.send = send
        self.life = life
        self.started = False  # the response's start was sent on

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.life.status = message["status"]
            self.started = True
        await self.send(message)


class _HeadersSend(_StatusSend):
    """``budget_headers=True``: the response's start is held until its first body message; when that
    ends the body and no stream of the request is open (its cost is known), the budget headers
    (:mod:`.flow.headers`) are added to it. A streamed response is passed on as it is."""

    __slots__ = ("held",)

    def __init__(self, send: Send, life: RequestLife) -> None:
        super().__init__(send, life)
        self.held: Message | None = None

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.life.status = message["status"]
            self.held = message
            return
        start = self.held
        if start is not None:
            self.held = None
            meter = self.life.meter
            if kind == "http.response.body" and not message.get("more_body", False) and meter is not None \
                    and cost_known(meter):
                extra = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in budget_headers(meter)]
                start = {**start, "headers": [*start.get("headers", ()), *extra]}
            self.started = True
            await self.send(start)
        await self.send(message)


def _serving() -> bool:
    """Whether an event loop runs here: the middleware is being built by an app already serving
    (Starlette builds its middleware stack on the first ASGI call)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _headers(scope: Scope) -> dict[str, str]:
    """Every header of the request (lowercase names), for match expressions that read ``headers``."""
    return header_map((name.decode("latin-1"), header_text(value)) for name, value in scope["headers"])


class _Lookup:
    """One request's header lookup (the flow's ``Request.header``, by the configured names' keys)
    and auth lookup (Starlette's authenticated user, else the app's resolver)."""

    __slots__ = ("keys", "notices", "resolver", "scope")

    def __init__(self, keys: dict[str, bytes], resolver: Callable[[Scope], object] | None, scope: Scope,
                 notices: Notices) -> None:
        self.keys = keys
        self.resolver = resolver
        self.scope = scope
        self.notices = notices

    def __call__(self, name: str) -> str | None:
        key = self.keys[name]
        for found, value in self.scope["headers"]:
            if found == key and value.strip():
                return header_text(value)
        return None

    def auth(self) -> object:
        scope = self.scope
        if "user" not in scope and self.resolver is None:
            self.notices.no_authenticated_user(
                'scope["user"]', "add Starlette's AuthenticationMiddleware so that it runs before "
                "IdentityMiddleware (add it after: the last added runs first)")
        found = _user_id(scope.get("user"))
        if found is None and self.resolver is not None:
            return self.resolver(self.scope)  # may be awaitable: the driver awaits it
        return found
