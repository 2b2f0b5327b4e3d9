"""One Django request through the flow: its parts read, its outcome attached, its response metered.

Shared by :class:`~.middleware.IdentityMiddleware` and by ``@budgeted`` on a site without the
middleware. Every decision is the flow's; :func:`serve` and :func:`aserve` only call it and the
rest of the chain, blocking or awaiting.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.http.request import RawPostDataException, UnreadablePostError

from ..context import Meter, Untracked, finalise_abandoned_outside_requests
from ..core.errors import ErrorResponse, RequestBudgetExceeded
from ..flow import Flow, JsonBody, Mark, Refused, Request, Tracked, header_text
from ..flow.headers import budget_headers, cost_known
from ..flow.life import RequestLife
from ..flow.request import header_map
from ..flow.steps import annotate
from ..flow.streams import AsyncMeteredIterator, MeteredIterable

__all__ = ["aserve", "error_response", "serve"]

View = Callable[[HttpRequest], HttpResponseBase]
AsyncView = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


def error_response(error: ErrorResponse) -> HttpResponse:
    """The pinned JSON error as a Django response (body bytes exactly as the core built them)."""
    response = HttpResponse(error.body, status=error.status, content_type="application/json")
    for name, value in error.headers:
        if name not in ("content-type", "content-length"):
            response[name] = value
    return response


# -- reading the request --------------------------------------------------------------------------
def _body(request: HttpRequest, max_body_size: int) -> bytes | None:
    """``request.body`` when the flow wants it (Django keeps it for the view). Django reads a body
    by its declared length, so one without is left to the view, as is one Django refuses."""
    declared = request.META.get("CONTENT_LENGTH") or ""
    if not declared.strip() or not JsonBody.allowed(request.META.get("CONTENT_TYPE"), declared, max_body_size):
        return None
    try:
        return request.body or None
    except (RequestDataTooBig, RawPostDataException, UnreadablePostError):
        return None


class _Lookup:
    """One request's header lookup (the flow's ``Request.header``) and auth lookups. A plain
    object rather than closures: fewer objects held while an async request waits for the store
    (see bench/README.md, "Garbage collection")."""

    __slots__ = ("flow", "request")

    def __init__(self, request: HttpRequest, flow: Flow) -> None:
        self.request = request
        self.flow = flow

    def __call__(self, name: str) -> str | None:
        value = self.request.headers.get(name)
        return header_text(value.encode("latin-1")) if value is not None else None

    def auth(self) -> object:
        return _auth(self.request, self.flow)

    def aauth(self) -> Awaitable[object]:
        return _aauth(self.request, self.flow)


def _request(lookup: _Lookup, mark: Mark | None) -> Request:
    request = lookup.request
    return Request(_body(request, lookup.flow.config.max_body_size), lookup, request.path_info, mark, request,
                   _headers)


def _headers(request: HttpRequest) -> dict[str, str]:
    """Every header of the request (lowercase names), for match expressions that read ``headers``."""
    return header_map((name, header_text(value.encode("latin-1"))) for name, value in request.headers.items())


def _username(user: Any) -> str | None:
    """An authenticated user's username (anonymous users carry no identity)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    name = user.get_username()
    return name if isinstance(name, str) and name else None


def _no_user(request: HttpRequest, flow: Flow) -> None:
    if flow.config.resolver is None and not hasattr(request, "user"):
        flow.notices.no_authenticated_user("request.user", 'add "django.contrib.auth" to INSTALLED_APPS and '
                                           "AuthenticationMiddleware to MIDDLEWARE, before IdentityMiddleware")


def _auth(request: HttpRequest, flow: Flow) -> object:
    _no_user(request, flow)
    found = _username(getattr(request, "user", None))
    if found is None and flow.config.resolver is not None:
        return flow.config.resolver(request)
    return found


async def _aauth(request: HttpRequest, flow: Flow) -> object:
    _no_user(request, flow)
    auser = getattr(request, "auser", None)  # AuthenticationMiddleware (Django >= 5) loads it without blocking
    user = await auser() if auser is not None else await sync_to_async(lambda: getattr(request, "user", None))()
    found = _username(user)
    if found is None and flow.config.resolver is not None:
        return flow.config.resolver(request)  # may be awaitable: the driver awaits it
    return found


# -- attaching the outcome, and the end of the response ---------------------------------------------
def _life(request: HttpRequest, flow: Flow, outcome: Tracked | Untracked) -> RequestLife:
    binding = outcome.meter if isinstance(outcome, Tracked) else outcome
    request.identity = binding.identity if isinstance(binding, Meter) else None  # type: ignore[attr-defined]
    return RequestLife(flow, binding)


def _settles_later(response: HttpResponseBase, life: RequestLife) -> bool:
    """Hand a streaming response's settlement to its content; ``False`` for a complete response."""
    meter = life.meter
    if meter is None or not isinstance(response, StreamingHttpResponse):
        return False

    def failed() -> bool:
        return life.failed

    content = response.streaming_content
    if isinstance(content, AsyncIterable):
        response.streaming_content = AsyncMeteredIterator(content, meter, life.flow, failed)
    else:
        response.streaming_content = MeteredIterable(content, meter, life.flow, failed)
    return True


# -- the request ----------------------------------------------------------------------------------
def serve(request: HttpRequest, flow: Flow, mark: Mark | None, call: View) -> HttpResponseBase:
    """Serve ``request`` with ``call`` (the rest of the middleware chain, or the view itself)."""
    lookup = _Lookup(request, flow)
    outcome = flow.run(flow.admission(_request(lookup, mark)), lookup.auth if flow.wants_auth else None)
    annotate(outcome)
    if isinstance(outcome, Refused):
        return error_response(outcome.error)
    try:
        with _life(request, flow, outcome) as life:
            response = call(request)
    except RequestBudgetExceeded as error:  # a ceiling the view did not catch (settled as an error)
        life.answered(429)
        return error_response(error.response)
    life.answered(response.status_code)
    _add_budget_headers(response, life, flow)
    if not _settles_later(response, life):
        life.settle()
    return response


async def aserve(request: HttpRequest, flow: Flow, mark: Mark | None, call: AsyncView) -> HttpResponseBase:
    lookup = _Lookup(request, flow)
    outcome = await flow.arun(flow.admission(_request(lookup, mark)),
                              lookup.aauth if flow.wants_auth else None)
    annotate(outcome)
    if isinstance(outcome, Refused):
        return error_response(outcome.error)
    finalise_abandoned_outside_requests()
    try:
        async with _life(request, flow, outcome) as life:
            response = await call(request)
    except RequestBudgetExceeded as error:
        life.answered(429)
        return error_response(error.response)
    life.answered(response.status_code)
    _add_budget_headers(response, life, flow)
    if not _settles_later(response, life):
        await life.asettle()
    return response


def _add_budget_headers(response: HttpResponseBase, life: RequestLife, flow: Flow) -> None:
    """``budget_headers=True``: on a complete response, its cost known (:mod:`..flow.headers`)."""
    meter = life.meter
    if flow.config.budget_headers and meter is not None and not isinstance(response, StreamingHttpResponse) \
            and cost_known(meter):
        for name, value in budget_headers(meter):
            response[name] = value
