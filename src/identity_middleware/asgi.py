"""``IdentityMiddleware``: pure ASGI middleware that resolves, gates, attaches and meters identities."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import anyio
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .context import Meter, bind, bind_untracked, unbind, unbind_untracked
from .core.errors import ErrorResponse, invalid_identity
from .core.resolve import Resolved, is_json_content_type, resolve_auth, resolve_tagged
from .core.validation import InvalidIdentity
from .decorators import BudgetedView, marker_of
from .gate import Gate, GateConfig, GateOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["IdentityMiddleware"]

logger = logging.getLogger("identity_middleware")

_ROUTE_CACHE_SIZE = 4096
_NO_MARKER = BudgetedView(0, False)


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
    """Add to any ASGI app: ``app.add_middleware(IdentityMiddleware, store=...)``.

    Per request: the identity comes from the JSON body (``identity`` / ``orq.identity``), an
    identity header, or the auth context, in that order; it is validated (400), rate limited and
    budget-checked (429), attached as ``request.state.identity`` and ``current_identity()``, and
    the usage recorded with ``record_usage`` is committed once when the response ends.
    Only JSON bodies up to ``max_body_size`` are read, and they are replayed to the app unchanged;
    everything else streams through untouched. Websocket and lifespan scopes pass through (the
    store is flushed at lifespan shutdown).
    """

    def __init__(self, app: ASGIApp, **options: Unpack[GateOptions]) -> None:
        self.app = app
        self.gate = Gate(GateConfig.build(**options))
        self.store = self.gate.store
        self.max_body_size = self.gate.config.max_body_size
        self._header_keys = {name: name.lower().encode("latin-1") for name in self.gate.header_names}
        self._resolver = self.gate.config.resolver
        self._shield_settle = not self.store.settles_before_await
        self._markers: dict[tuple[str, str], BudgetedView] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
        else:
            await self.app(scope, receive, send)

    def _lifespan_send(self, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                try:
                    await self.store.aflush()  # usage held back by a batching store is written now
                except Exception:
                    logger.exception("identity store: flushing pending usage at shutdown failed")
            await send(message)

        return lifespan_send

    # -- reading the request ---------------------------------------------------------------------
    async def _read_json_body(self, scope: Scope, receive: Receive) -> tuple[bytes | None, list[Message]]:
        """Buffer a JSON body up to the limit. Returns ``(body or None, messages to replay)``:
        ``None`` when the body is not JSON, too large, or cut short (those pass through unread)."""
        content_type = content_length = None
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value
            elif key == b"content-length":
                content_length = value
        if content_type is None:
            return None, []
        if not is_json_content_type(content_type.decode("latin-1")):
            return None, []
        if content_length is not None:
            try:
                if int(content_length) > self.max_body_size:
                    return None, []
            except ValueError:
                return None, []
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # A disconnect while reading: hand back what came, then the disconnect.
                return None, [self._replay(chunks, more_body=True), message] if chunks else [message]
            chunk = message.get("body", b"")
            if chunk:
                chunks.append(chunk)
                size += len(chunk)
            if not message.get("more_body", False):
                body = b"".join(chunks)
                return body, [{"type": "http.request", "body": body, "more_body": False}]
            if size > self.max_body_size:
                return None, [self._replay(chunks, more_body=True)]

    @staticmethod
    def _replay(chunks: list[bytes], *, more_body: bool) -> Message:
        return {"type": "http.request", "body": b"".join(chunks), "more_body": more_body}

    async def _resolve(self, scope: Scope, body: bytes | None) -> Resolved | None:
        headers = scope["headers"]

        def header(name: str) -> str | None:
            key = self._header_keys[name]
            for found, value in headers:
                if found == key and value.strip():
                    return str(value.decode("latin-1"))
            return None

        resolved = resolve_tagged(body, header, self.gate.header_names)
        if resolved is not None:
            return resolved
        found: object = _user_id(scope.get("user"))
        if found is None and self._resolver is not None:
            found = self._resolver(scope)
            if inspect.isawaitable(found):
                found = await found
        return resolve_auth(found)

    def _marker(self, scope: Scope) -> BudgetedView:
        """The ``@budgeted`` mark of the endpoint this request will reach (Starlette routing)."""
        app = scope.get("app")
        router = getattr(app, "router", None)
        if router is None:
            return _NO_MARKER
        key = (scope["method"], scope["path"])
        found = self._markers.get(key)
        if found is None:
            found = _find_marker(getattr(router, "routes", ()), scope) or _NO_MARKER
            if len(self._markers) >= _ROUTE_CACHE_SIZE:
                self._markers.clear()
            self._markers[key] = found
        return found

    # -- the request -----------------------------------------------------------------------------
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, replay = await self._read_json_body(scope, receive)
        try:
            resolved = await self._resolve(scope, body)
        except InvalidIdentity as error:
            await _send_error(send, invalid_identity(error))
            return
        view = self._marker(scope)
        estimate = view.estimate or self.gate.estimate_for(scope["path"])
        outcome = await self.gate.aadmit(resolved, estimate=estimate,
                                         require=True if view.require_identity else None,
                                         budgeted=view is not _NO_MARKER)
        if isinstance(outcome, ErrorResponse):
            await _send_error(send, outcome)
            return
        if replay:
            receive = _replaying(replay, receive)
        if outcome is None:
            if resolved is None:
                await self.app(scope, receive, send)
                return
            token = bind_untracked(resolved.external_id)
            try:
                await self.app(scope, receive, send)
            finally:
                unbind_untracked(token)
            return
        await self._tracked(outcome, scope, receive, send)

    async def _tracked(self, meter: Meter, scope: Scope, receive: Receive, send: Send) -> None:
        scope["state"] = {**scope.get("state", {}), "identity": meter.identity}
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = bind(meter)
        failed = True
        try:
            await self.app(scope, receive, send_status)
            failed = False
        finally:
            unbind(token)
            error = failed or status >= 400
            if self._shield_settle:
                # A client that disconnects cancels the request, never its accounting.
                with anyio.CancelScope(shield=True):
                    await self.gate.asettle(meter, error=error)
            else:
                await self.gate.asettle(meter, error=error)  # taken before any await: nothing to shield


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def _find_marker(routes: Iterable[Any], scope: Scope) -> BudgetedView | None:
    for route in routes:
        try:
            match, child = route.matches(scope)
        except Exception:  # a custom route that cannot match this scope
            continue
        if match is not Match.FULL:
            continue
        children = getattr(route, "routes", None)
        if children is not None and not hasattr(route, "endpoint"):
            return _find_marker(children, {**scope, **child})
        return marker_of(getattr(route, "endpoint", None))
    return None
