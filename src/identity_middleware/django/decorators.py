"""``@budgeted`` for Django views: declare the cost estimate and that the view needs an identity."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from ..core.money import Money, to_nanos
from ..decorators import MARKER, BudgetedView
from .conf import current_gate
from .flow import areserve_for, arun, error_response, reserve_for, run, seen_by_flow

__all__ = ["budgeted"]

F = TypeVar("F", bound=Callable[..., Any])


def budgeted(estimate: Money | None = None, *, require_identity: bool = True) -> Callable[[F], F]:
    """Mark a sync or async Django view as LLM-calling: ``@budgeted(estimate="0.02")``.

    With ``IdentityMiddleware`` installed the middleware reads the mark before the view runs and
    reserves the estimate (and requires the identity) at admission. Without it, the decorator
    runs the same request flow itself around the view, with the same settings.
    """
    view = BudgetedView(to_nanos(estimate) if estimate is not None else 0, require_identity)

    def decorate(func: F) -> F:
        if iscoroutinefunction(func):
            @functools.wraps(func)
            async def async_view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
                async def call(request: HttpRequest) -> HttpResponseBase:
                    return cast(HttpResponseBase, await func(request, *args, **kwargs))

                seen = seen_by_flow(request)
                if seen is None:
                    return await arun(request, current_gate(), view, call)
                refusal = None if seen.view is not None else await areserve_for(view, seen.identified)
                return error_response(refusal) if refusal is not None else await call(request)

            wrapper: Callable[..., Any] = async_view
        else:
            @functools.wraps(func)
            def sync_view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
                def call(request: HttpRequest) -> HttpResponseBase:
                    return cast(HttpResponseBase, func(request, *args, **kwargs))

                seen = seen_by_flow(request)
                if seen is None:
                    return run(request, current_gate(), view, call)
                refusal = None if seen.view is not None else reserve_for(view, seen.identified)
                return error_response(refusal) if refusal is not None else call(request)

            wrapper = sync_view
        setattr(wrapper, MARKER, view)
        return cast(F, wrapper)

    return decorate
