"""OpenAI: chat completions and the Responses API, the identity sent as ``safety_identifier`` and
stream usage asked for (``stream_options.include_usage``), its extra chunk hidden when we asked."""

from __future__ import annotations

from typing import Any

from ..context import Meter
from ..core.tiers import rewrite
from ..pricing import CallUsage, call_usage
from .calls import Options, Tap, record_response
from .streams import AsyncMeteredStream, MeteredStream

__all__ = ["ChatTap", "ResponsesTap", "finish_call", "prepare_chat", "prepare_responses"]

_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ChatTap:
    """Chat completion chunks: the usage comes in a last chunk with no choices."""

    def __init__(self, hide_usage_chunk: bool) -> None:
        self.usage: tuple[CallUsage, str | None] | None = None
        self._hide = hide_usage_chunk

    def observe(self, item: Any) -> bool:
        if getattr(item, "usage", None) is None:
            return False
        self.usage = (call_usage(item, "openai"), getattr(item, "id", None))
        return self._hide and not getattr(item, "choices", None)


class ResponsesTap:
    """Responses API events: the final event carries the whole response, usage included."""

    usage: tuple[CallUsage, str | None] | None = None

    def observe(self, item: Any) -> bool:
        if getattr(item, "type", None) in _FINAL_EVENTS:
            response = getattr(item, "response", None)
            if getattr(response, "usage", None) is not None:
                self.usage = (call_usage(response, "openai"), getattr(response, "id", None))
        return False


def _identify(kwargs: dict[str, Any], meter: Meter, options: Options, cap: str = "max_completion_tokens") -> None:
    if meter.tier is not None:  # degrade: the tier's model and output cap (``cap`` when the call set none)
        rewrite(kwargs, meter.tier, cap)
    # The caller's own end-user fields win; `user` is the older name of the same thing.
    if not isinstance(kwargs.get("safety_identifier"), str) and not isinstance(kwargs.get("user"), str):
        kwargs["safety_identifier"] = options.identifier(meter)


def _ask_stream_usage(kwargs: dict[str, Any]) -> bool:
    """Ask for the usage chunk; ``True`` when the caller had not (so it is hidden from them)."""
    given = kwargs.get("stream_options")
    given = given if isinstance(given, dict) else {}
    if given.get("include_usage"):
        return False
    kwargs["stream_options"] = {**given, "include_usage": True}
    return True


def prepare_chat(kwargs: dict[str, Any], meter: Meter, options: Options) -> Tap | None:
    _identify(kwargs, meter, options)
    if kwargs.get("stream") is True:
        return ChatTap(_ask_stream_usage(kwargs))
    return None


def prepare_chat_helper(kwargs: dict[str, Any], meter: Meter, options: Options) -> Tap | None:
    """``chat.completions.stream()``: its final completion has usage only when asked for."""
    _identify(kwargs, meter, options)
    _ask_stream_usage(kwargs)
    return None


def prepare_responses(kwargs: dict[str, Any], meter: Meter, options: Options) -> Tap | None:
    _identify(kwargs, meter, options, "max_output_tokens")
    return ResponsesTap() if kwargs.get("stream") is True else None


def finish_call(result: Any, meter: Meter, options: Options, tap: Tap | None, model: Any) -> Any:
    """A response is metered now; a stream is wrapped and metered when it ends."""
    if tap is None:
        record_response(result, meter, options)
        return result
    if hasattr(result, "__aiter__"):
        return AsyncMeteredStream(result, tap, meter, options, model)
    return MeteredStream(result, tap, meter, options, model)
