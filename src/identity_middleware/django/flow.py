"""One Django request through the gate: resolve, admit, attach, settle (sync and async twins).

Shared by :class:`IdentityMiddleware` and by ``@budgeted`` on a site without the middleware.
The sync and async paths differ only where they touch the store, the user or the view.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextvars import Token
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.http.request import RawPostDataException, UnreadablePostError

from ..context import Meter, bind, current_meter, unbind
from ..core.errors import ErrorResponse, identity_required, invalid_identity
from ..core.resolve import Resolved, is_json_content_type, resolve_auth, resolve_tagged
from ..core.validation import InvalidIdentity
from ..decorators import BudgetedView
from ..gate import Gate
from ..wsgi import MeteredIterable

__all__ = ["Seen", "areserve_for", "arun", "error_response", "reserve_for", "run", "seen_by_flow"]

_SEEN = "_identity_middleware_seen"

View = Callable[[HttpRequest], HttpResponseBase]
AsyncView = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


def error_response(error: ErrorResponse) -> HttpResponse:
    """The pinned JSON error as a Django response (body bytes exactly as the core built them)."""
    response = HttpResponse(error.body, status=error.status, content_type="application/json")
    for name, value in error.headers:
        if name not in ("content-type", "content-length"):
            response[name] = value
    return response


# -- resolution -----------------------------------------------------------------------------------
def _json_body(request: HttpRequest, max_body_size: int) -> bytes | None:
    """``request.body`` for a JSON body of a declared length within the limit (Django keeps it for
    the view); ``None`` otherwise, and when Django refuses to read it (the view will see why)."""
    if not is_json_content_type(request.META.get("CONTENT_TYPE")):
        return None
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if not 0 < length <= max_body_size:
        return None
    try:
        return request.body
    except (RequestDataTooBig, RawPostDataException, UnreadablePostError):
        return None


def _tagged(request: HttpRequest, gate: Gate) -> Resolved | None:
    body = _json_body(request, gate.config.max_body_size)
    return resolve_tagged(body, lambda name: request.headers.get(name), gate.header_names)


def _username(user: Any) -> str | None:
    """An authenticated user's username (anonymous users carry no identity)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    name = user.get_username()
    return name if isinstance(name, str) and name else None


def resolve_request(request: HttpRequest, gate: Gate) -> Resolved | None:
    """Body, then identity header, then ``request.user``, then the configured resolver."""
    resolved = _tagged(request, gate)
    if resolved is not None:
        return resolved
    found: object = _username(getattr(request, "user", None))
    if found is None and gate.config.resolver is not None:
        found = gate.config.resolver(request)
        if inspect.isawaitable(found):
            raise TypeError("an async RESOLVER serves async requests only; make it a plain function")
    return resolve_auth(found)


async def aresolve_request(request: HttpRequest, gate: Gate) -> Resolved | None:
    resolved = _tagged(request, gate)
    if resolved is not None:
        return resolved
    auser = getattr(request, "auser", None)  # AuthenticationMiddleware (Django >= 5) loads it without blocking
    if auser is not None:
        user = await auser()
    else:
        user = await sync_to_async(lambda: getattr(request, "user", None))()
    found: object = _username(user)
    if found is None and gate.config.resolver is not None:
        found = gate.config.resolver(request)
        if inspect.isawaitable(found):
            found = await found
    return resolve_auth(found)


# -- admission ------------------------------------------------------------------------------------
def _admission(request: HttpRequest, gate: Gate, view: BudgetedView | None) -> dict[str, Any]:
    estimate = (view.estimate if view is not None else 0) or gate.estimate_for(request.path_info)
    return {"estimate": estimate, "require": True if view is not None and view.require_identity else None,
            "budgeted": view is not None}


@dataclass(frozen=True, slots=True)
class Seen:
    """What the flow decided for a request, for the ``@budgeted`` view it then reaches."""

    view: BudgetedView | None  # the mark admission applied; None when it saw none
    identified: bool  # an identity was resolved (so a missing meter means the store was skipped)


def seen_by_flow(request: HttpRequest) -> Seen | None:
    found = getattr(request, _SEEN, None)
    return found if isinstance(found, Seen) else None


def _enter(request: HttpRequest, view: BudgetedView | None, resolved: Resolved | None) -> None:
    setattr(request, _SEEN, Seen(view, resolved is not None))
    request.identity = None  # type: ignore[attr-defined]


def _attach(request: HttpRequest, meter: Meter) -> Token[Meter | None]:
    request.identity = meter.identity  # type: ignore[attr-defined]
    return bind(meter)


# -- the end of the response ----------------------------------------------------------------------
class AsyncMeteredIterator:
    """Async streaming content whose steps run with the meter bound; settles (async) when it ends.

    ``close()`` is the fallback for a stream abandoned part-way: Django calls it from
    ``response.close()`` (in a worker thread under ASGI), where the sync store form is right.
    """

    def __init__(self, inner: AsyncIterable[bytes], meter: Meter, gate: Gate, failed: Callable[[], bool]) -> None:
        self._inner = inner
        self._iterator: AsyncIterator[bytes] | None = None
        self._meter = meter
        self._gate = gate
        self._failed = failed

    def __aiter__(self) -> AsyncMeteredIterator:
        return self

    async def __anext__(self) -> bytes:
        token = bind(self._meter)
        try:
            if self._iterator is None:
                self._iterator = aiter(self._inner)
            return await anext(self._iterator)
        except StopAsyncIteration:
            await self._gate.asettle(self._meter, error=self._failed())
            raise
        except BaseException:
            await self._gate.asettle(self._meter, error=True)
            raise
        finally:
            unbind(token)

    def close(self) -> None:
        self._gate.settle(self._meter, error=self._failed())


def _settles_later(response: HttpResponseBase, meter: Meter, gate: Gate) -> bool:
    """Hand a streaming response's settlement to its content; ``False`` for a complete response."""
    if not isinstance(response, StreamingHttpResponse):
        return False

    def failed() -> bool:
        return response.status_code >= 400

    content = response.streaming_content
    if isinstance(content, AsyncIterable):
        response.streaming_content = AsyncMeteredIterator(content, meter, gate, failed)
    else:
        response.streaming_content = MeteredIterable(
            content, meter, lambda error: gate.settle(meter, error=error), failed)
    return True


# -- the flow -------------------------------------------------------------------------------------
def run(request: HttpRequest, gate: Gate, view: BudgetedView | None, call: View) -> HttpResponseBase:
    """Serve ``request`` with ``call`` (the rest of the middleware chain, or the view itself)."""
    try:
        resolved = resolve_request(request, gate)
    except InvalidIdentity as error:
        return error_response(invalid_identity(error))
    _enter(request, view, resolved)
    outcome = gate.admit(resolved, **_admission(request, gate, view))
    if isinstance(outcome, ErrorResponse):
        return error_response(outcome)
    if outcome is None:
        return call(request)
    token = _attach(request, outcome)
    try:
        response = call(request)
    except BaseException:
        gate.settle(outcome, error=True)
        raise
    finally:
        unbind(token)
    if not _settles_later(response, outcome, gate):
        gate.settle(outcome, error=response.status_code >= 400)
    return response


async def arun(request: HttpRequest, gate: Gate, view: BudgetedView | None, call: AsyncView) -> HttpResponseBase:
    try:
        resolved = await aresolve_request(request, gate)
    except InvalidIdentity as error:
        return error_response(invalid_identity(error))
    _enter(request, view, resolved)
    outcome = await gate.aadmit(resolved, **_admission(request, gate, view))
    if isinstance(outcome, ErrorResponse):
        return error_response(outcome)
    if outcome is None:
        return await call(request)
    token = _attach(request, outcome)
    try:
        response = await call(request)
    except BaseException:
        await gate.asettle(outcome, error=True)
        raise
    finally:
        unbind(token)
    if not _settles_later(response, outcome, gate):
        await gate.asettle(outcome, error=response.status_code >= 400)
    return response


# -- a view's own declaration when the middleware did not see it ------------------------------------
def _unreserved(view: BudgetedView, identified: bool) -> tuple[Meter | None, ErrorResponse | None]:
    """``(meter to reserve on, None)`` when the view's estimate still needs reserving, else
    ``(None, refusal or None)``. An identified request without a meter was let through by the
    fail-open outage policy, and stays let through."""
    meter = current_meter()
    if meter is None:
        return None, identity_required() if view.require_identity and not identified else None
    if meter.budgeted or not view.estimate or meter.gate is None:
        return None, None
    return meter, None


def reserve_for(view: BudgetedView, identified: bool) -> ErrorResponse | None:
    """The view's own reservation when admission did not see its mark (e.g. a URL the
    middleware could not resolve to the view)."""
    meter, refusal = _unreserved(view, identified)
    if meter is None or meter.gate is None:
        return refusal
    return meter.gate.reserve(meter, view.estimate)


async def areserve_for(view: BudgetedView, identified: bool) -> ErrorResponse | None:
    meter, refusal = _unreserved(view, identified)
    if meter is None or meter.gate is None:
        return refusal
    return await meter.gate.areserve(meter, view.estimate)
