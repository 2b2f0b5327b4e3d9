"""``instrument(client)``: OpenAI and Anthropic SDK clients that meter their calls inside a tracked
request, priced automatically, and tell the provider who the end user is.

Only public SDK surface is touched: the client's resource objects get their ``create``/``parse``/
``stream`` methods wrapped on the instance. Outside a tracked request a wrapped method calls the
original at once, so the client behaves as before.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from ..pricing import Prices
from . import anthropic as _anthropic
from . import openai as _openai
from .calls import Finish, Options, Prepare, wrap
from .streams import metered_manager

__all__ = ["instrument"]

C = TypeVar("C")

_instrumented: weakref.WeakSet[Any] = weakref.WeakSet()

# (resource path, method, prepare, finish) per provider
_Plan = tuple[tuple[str, ...], str, Prepare, Finish]
_OPENAI: tuple[_Plan, ...] = (
    (("chat", "completions"), "create", _openai.prepare_chat, _openai.finish_call),
    (("chat", "completions"), "parse", _openai.prepare_chat, _openai.finish_call),
    (("chat", "completions"), "stream", _openai.prepare_chat_helper, metered_manager("get_final_completion")),
    (("responses",), "create", _openai.prepare_responses, _openai.finish_call),
    (("responses",), "parse", _openai.prepare_responses, _openai.finish_call),
    (("responses",), "stream", _openai.prepare_responses, metered_manager("get_final_response")),
)
_ANTHROPIC: tuple[_Plan, ...] = (
    (("messages",), "create", _anthropic.prepare_messages, _openai.finish_call),
    (("messages",), "stream", _anthropic.prepare_messages_helper, metered_manager("get_final_message")),
)


def _provider(client: Any) -> tuple[str, bool, tuple[_Plan, ...]]:
    """The provider, whether the client is async, and what to wrap."""
    try:
        import openai
    except ImportError:
        pass
    else:
        if isinstance(client, (openai.OpenAI, openai.AsyncOpenAI)):
            return "openai", isinstance(client, openai.AsyncOpenAI), _OPENAI
    try:
        import anthropic
    except ImportError:
        pass
    else:
        if isinstance(client, (anthropic.Anthropic, anthropic.AsyncAnthropic)):
            return "anthropic", isinstance(client, anthropic.AsyncAnthropic), _ANTHROPIC
    raise TypeError(f"instrument() takes an openai.OpenAI/AsyncOpenAI or anthropic.Anthropic/AsyncAnthropic "
                    f"client, not {type(client).__name__}")


def instrument(client: C, *, hash_identity: bool = False, prices: Prices | None = None) -> C:
    """Instrument ``client`` in place and return it (instrumenting twice changes nothing).

    Inside a tracked request each call records its usage once (streams from their final usage,
    read to the end when the consumer stops early: closed, left with ``break``, abandoned; a
    stream still open when its request ends is ended then, before the request settles, so its
    usage is that request's whatever context finalises it), priced by ``prices`` (per-model overrides)
    else by genai-prices; a failed call marks the request as an error at no cost. The identity is
    passed on as ``safety_identifier`` (OpenAI) or ``metadata.user_id`` (Anthropic), as a SHA-256
    hex digest with ``hash_identity=True`` (or when longer than OpenAI's 64 characters). Copies
    made with ``client.with_options(...)`` are instrumented too.
    """
    if client in _instrumented:
        return client
    provider, asynchronous, plans = _provider(client)
    options = Options(provider, hash_identity, prices)
    for path, name, prepare, finish in plans:
        resource: Any = client
        for part in path:
            resource = getattr(resource, part, None)
        method = getattr(resource, name, None)
        if method is not None:
            # A stream helper returns its (async) manager at once, even on an async client.
            setattr(resource, name, wrap(method, options, prepare, finish,
                                         asynchronous=asynchronous and name != "stream"))
    for name in ("with_options", "copy"):
        original = getattr(client, name, None)
        if original is not None:
            setattr(client, name, _instrumenting(original, hash_identity, prices))
    _instrumented.add(client)
    return client


def _instrumenting(copy: Callable[..., Any], hash_identity: bool, prices: Prices | None) -> Callable[..., Any]:
    def copied(*args: Any, **kwargs: Any) -> Any:
        return instrument(copy(*args, **kwargs), hash_identity=hash_identity, prices=prices)

    return copied
