"""Wrapping one SDK resource method: pass the identity on, meter the call once, count failures."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..context import Meter, current_meter
from ..pricing import CallUsage, Prices, call_usage
from ..usage import record_call, response_key

__all__ = ["Finish", "Options", "Prepare", "Tap", "meter_failure", "record_response", "wrap"]

# OpenAI caps safety_identifier at 64 characters; a longer id is sent as its SHA-256.
_MAX_IDENTIFIER = 64


@dataclass(frozen=True, slots=True)
class Options:
    provider: str  # "openai" | "anthropic": the price lookup's provider hint
    hash_identity: bool = False
    prices: Prices | None = None

    def identifier(self, meter: Meter) -> str:
        """What the provider is told about the identity: its external id, or a SHA-256 of it."""
        external_id = meter.identity.external_id
        if self.hash_identity or len(external_id) > _MAX_IDENTIFIER:
            return hashlib.sha256(external_id.encode("utf-8", "surrogatepass")).hexdigest()
        return external_id


class Tap(Protocol):
    """Watches a stream's items for its usage: ``observe`` answers whether to hide the item from
    the consumer (a usage chunk only we asked for); ``usage`` is set once the final usage arrived."""

    usage: tuple[CallUsage, str | None] | None

    def observe(self, item: Any) -> bool: ...


Prepare = Callable[[dict[str, Any], Meter, Options], "Tap | None"]
Finish = Callable[[Any, Meter, Options, "Tap | None", Any], Any]  # result, ..., the call's model


def record_response(response: Any, meter: Meter, options: Options) -> None:
    record_call(call_usage(response, options.provider), prices=options.prices, key=response_key(response),
                meter=meter)


def meter_failure(meter: Meter, model: Any) -> None:
    """A failed call: the request counts as an error, the model as called, at no cost."""
    meter.fail()
    meter.add(0, 0, 0, model if isinstance(model, str) else None)


def wrap(method: Callable[..., Any], options: Options, prepare: Prepare, finish: Finish, *,
         asynchronous: bool) -> Callable[..., Any]:
    """``method`` metered inside a tracked request, untouched outside one. A request whose cost
    (or session's) has reached its ceiling raises ``RequestBudgetExceeded`` instead of sending the
    call. ``prepare`` edits the call's keyword arguments (identity, stream usage, the degrade
    tier's model and output cap) and gives the stream's tap; ``finish`` meters
    the result (a response, or a stream it wraps and returns). ``asynchronous``: ``method``
    returns an awaitable (the SDKs' async methods are plain functions returning coroutines)."""
    if asynchronous:

        @functools.wraps(method)
        async def acall(*args: Any, **kwargs: Any) -> Any:
            meter = current_meter()
            if meter is None:
                return await method(*args, **kwargs)
            meter.check_ceiling()  # RequestBudgetExceeded: the call is not sent
            if meter.session is not None:
                await meter.session.acheck(meter)
            tap = prepare(kwargs, meter, options)
            try:
                result = await method(*args, **kwargs)
            except Exception:
                meter_failure(meter, kwargs.get("model"))
                raise
            return finish(result, meter, options, tap, kwargs.get("model"))

        return acall

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        meter = current_meter()
        if meter is None:
            return method(*args, **kwargs)
        meter.check_ceiling()
        if meter.session is not None:
            meter.session.check(meter)
        tap = prepare(kwargs, meter, options)
        try:
            result = method(*args, **kwargs)
        except Exception:
            meter_failure(meter, kwargs.get("model"))
            raise
        return finish(result, meter, options, tap, kwargs.get("model"))

    return call
