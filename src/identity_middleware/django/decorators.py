"""``@budgeted`` for Django views: declare the cost estimate and that the view needs an identity."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal, TypeVar, cast

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from ..context import current
from ..core.errors import RequestBudgetExceeded
from ..core.money import Money
from ..flow.request import Mark
from ..flow.steps import aenter_view, enter_view
from .conf import current_flow
from .shell import aserve, error_response, serve

__all__ = ["MARK", "budgeted", "mark_of"]

MARK = "__identity_budgeted__"
F = TypeVar("F", bound=Callable[..., Any])


def mark_of(view: object) -> Mark | None:
    found = getattr(view, MARK, None)
    return found if isinstance(found, Mark) else None


def budgeted(estimate: Money | Literal["auto"] | None = None, *, require_identity: bool = True,
             max_cost: Money | None = None) -> Callable[[F], F]:
    """Mark a sync or async Django view as LLM-calling: ``@budgeted(estimate="0.02")``.

    ``max_cost`` (USD): this request's ceiling, as for :func:`identity_middleware.budgeted`.

    With ``IdentityMiddleware`` installed the middleware reads the mark before the view runs and
    reserves the estimate (and requires the identity) at admission. Without it, the decorator
    runs the same request flow itself around the view, with the same settings.
    """
    mark = Mark.of(estimate, require_identity, max_cost)

    def decorate(func: F) -> F:
        if iscoroutinefunction(func):
            @functools.wraps(func)
            async def async_view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
                async def call(request: HttpRequest) -> HttpResponseBase:
                    return cast(HttpResponseBase, await func(request, *args, **kwargs))

                if current() is None:  # no middleware: the decorator runs the flow
                    return await aserve(request, current_flow(), mark, call)
                refusal = await aenter_view(mark)
                if refusal is not None:
                    return error_response(refusal)
                try:
                    return await call(request)
                except RequestBudgetExceeded as error:
                    return error_response(error.response)

            wrapper: Callable[..., Any] = async_view
        else:
            @functools.wraps(func)
            def sync_view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
                def call(request: HttpRequest) -> HttpResponseBase:
                    return cast(HttpResponseBase, func(request, *args, **kwargs))

                if current() is None:
                    return serve(request, current_flow(), mark, call)
                refusal = enter_view(mark)
                if refusal is not None:
                    return error_response(refusal)
                try:
                    return call(request)
                except RequestBudgetExceeded as error:
                    return error_response(error.response)

            wrapper = sync_view
        setattr(wrapper, MARK, mark)
        return cast(F, wrapper)

    return decorate
