"""Starlette/FastAPI face: ``@budgeted`` for endpoints, and finding an endpoint's mark by routing."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar, cast

from starlette.responses import Response, StreamingResponse
from starlette.routing import Match
from starlette.types import Scope

from .core.errors import ErrorResponse, RequestBudgetExceeded
from .core.money import Money
from .flow.request import Mark
from .flow.steps import aenter_view, enter_view
from .flow.streams import metered_stream

__all__ = ["MARK", "budgeted", "find_mark", "mark_of"]

MARK = "__identity_budgeted__"
F = TypeVar("F", bound=Callable[..., Any])


def mark_of(endpoint: object) -> Mark | None:
    found = getattr(endpoint, MARK, None)
    return found if isinstance(found, Mark) else None


def find_mark(routes: Iterable[Any], scope: Scope) -> Mark | None:
    """The mark of the endpoint Starlette's routing sends ``scope`` to (into mounts), if any."""
    for route in routes:
        try:
            match, child = route.matches(scope)
        except Exception:  # a custom route that cannot match this scope
            continue
        if match is not Match.FULL:
            continue
        children = getattr(route, "routes", None)
        if children is not None and not hasattr(route, "endpoint"):
            return find_mark(children, {**scope, **child})
        return mark_of(getattr(route, "endpoint", None))
    return None


def as_response(error: ErrorResponse) -> Response:
    return Response(error.body, status_code=error.status,
                    headers={name: value for name, value in error.headers if name != "content-length"})


def _owned(response: Any) -> Any:
    """A ``StreamingResponse``'s body as a stream of the request being served (:func:`metered_stream`)."""
    if isinstance(response, StreamingResponse):
        response.body_iterator = metered_stream(response.body_iterator)
    return response


def budgeted(estimate: Money | Literal["auto"] | None = None, *, require_identity: bool = True,
             max_cost: Money | None = None) -> Callable[[F], F]:
    """Mark a Starlette/FastAPI endpoint as LLM-calling: ``@budgeted(estimate="0.02")``.

    ``max_cost`` (USD) is a ceiling on this request's instrumented LLM calls together: once their
    recorded cost reaches it, the next call is not sent and raises
    :class:`~identity_middleware.RequestBudgetExceeded`; uncaught, the view answers
    ``429 request_budget_exceeded``.

    ``IdentityMiddleware`` sees the mark when it routes the request, so the estimate is reserved
    (and the identity required) in the same admission, before the view runs. Where it could not
    see it (an app without a Starlette router), the view reserves the estimate itself on entry.
    A ``StreamingResponse`` the view returns gets a body that belongs to its request
    (:func:`~identity_middleware.metered_stream`): usage an async body records, even after its
    client left, lands on this request, once. Starlette iterates a sync body in worker threads,
    beyond this reach: pass it through ``metered_stream()`` yourself when building the response.
    """
    mark = Mark.of(estimate, require_identity, max_cost)

    def decorate(func: F) -> F:
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def async_view(*args: Any, **kwargs: Any) -> Any:
                refusal = await aenter_view(mark)
                if refusal is not None:
                    return as_response(refusal)
                try:
                    return _owned(await func(*args, **kwargs))
                except RequestBudgetExceeded as error:
                    return as_response(error.response)

            wrapper: Callable[..., Any] = async_view
        else:
            @functools.wraps(func)
            def sync_view(*args: Any, **kwargs: Any) -> Any:
                refusal = enter_view(mark)
                if refusal is not None:
                    return as_response(refusal)
                try:
                    return _owned(func(*args, **kwargs))
                except RequestBudgetExceeded as error:
                    return as_response(error.response)

            wrapper = sync_view
        setattr(wrapper, MARK, mark)
        return cast(F, wrapper)

    return decorate
