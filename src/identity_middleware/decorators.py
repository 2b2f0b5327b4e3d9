"""``@budgeted``: declare an LLM-calling view's cost estimate and that it needs an identity."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from starlette.responses import Response

from .context import current_meter, untracked_identity
from .core.errors import ErrorResponse, identity_required
from .core.money import Money, to_nanos

__all__ = ["MARKER", "BudgetedView", "budgeted", "marker_of"]

MARKER = "__identity_budgeted__"
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class BudgetedView:
    """What a view declared: the cost to reserve (nano-USD) and whether it needs an identity."""

    estimate: int
    require_identity: bool


def marker_of(endpoint: object) -> BudgetedView | None:
    found = getattr(endpoint, MARKER, None)
    return found if isinstance(found, BudgetedView) else None


def as_response(error: ErrorResponse) -> Response:
    return Response(error.body, status_code=error.status,
                    headers={name: value for name, value in error.headers if name != "content-length"})


def _anonymous(view: BudgetedView) -> ErrorResponse | None:
    """No meter: refuse only a request that carried no identity at all (one let through
    untracked, e.g. during a store outage under the "open" policy, still reaches the view)."""
    if view.require_identity and untracked_identity() is None:
        return identity_required()
    return None


def budgeted(estimate: Money | None = None, *, require_identity: bool = True) -> Callable[[F], F]:
    """Mark a Starlette/FastAPI endpoint as LLM-calling.

    ``IdentityMiddleware`` sees the mark when it routes the request, so the estimate is reserved
    (and the identity required) in the same admission step, before the view runs. Where it could
    not see it (an app without a Starlette router), the view reserves the estimate itself on entry.
    """
    view = BudgetedView(to_nanos(estimate) if estimate is not None else 0, require_identity)

    def decorate(func: F) -> F:
        def check() -> ErrorResponse | None:
            meter = current_meter()
            if meter is None:
                return _anonymous(view)
            if meter.budgeted or not view.estimate or meter.gate is None:
                return None
            return meter.gate.reserve(meter, view.estimate)

        async def acheck() -> ErrorResponse | None:
            meter = current_meter()
            if meter is None:
                return _anonymous(view)
            if meter.budgeted or not view.estimate or meter.gate is None:
                return None
            return await meter.gate.areserve(meter, view.estimate)

        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def async_view(*args: Any, **kwargs: Any) -> Any:
                refusal = await acheck()
                if refusal is not None:
                    return as_response(refusal)
                return await func(*args, **kwargs)

            wrapper: Callable[..., Any] = async_view
        else:
            @functools.wraps(func)
            def sync_view(*args: Any, **kwargs: Any) -> Any:
                refusal = check()
                if refusal is not None:
                    return as_response(refusal)
                return func(*args, **kwargs)

            wrapper = sync_view
        setattr(wrapper, MARKER, view)
        return cast(F, wrapper)

    return decorate
