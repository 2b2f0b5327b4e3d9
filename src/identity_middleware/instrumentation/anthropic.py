"""Anthropic: messages, the identity sent as ``metadata.user_id``; a stream's usage is read from its
``message_start`` (input) and final ``message_delta`` (output) events."""

from __future__ import annotations

from typing import Any

from ..context import Meter
from ..core.tiers import rewrite
from ..pricing import CallUsage, call_usage
from .calls import Options, Tap

__all__ = ["MessageTap", "prepare_messages", "prepare_messages_helper"]

_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


class MessageTap:
    """Raw message stream events: usage counts from ``message_start``, updated by ``message_delta``."""

    def __init__(self) -> None:
        self.usage: tuple[CallUsage, str | None] | None = None
        self._counts: dict[str, Any] = {}
        self._model: str | None = None
        self._id: str | None = None

    def observe(self, item: Any) -> bool:
        kind = getattr(item, "type", None)
        if kind == "message_start":
            message = item.message
            self._model, self._id = getattr(message, "model", None), getattr(message, "id", None)
            self._take(getattr(message, "usage", None))
        elif kind == "message_delta":
            self._take(getattr(item, "usage", None))
            self.usage = (call_usage({"model": self._model, "type": "message", "usage": self._counts}, "anthropic"),
                          self._id)
        return False

    def _take(self, usage: Any) -> None:
        for name in _USAGE_FIELDS:
            value = getattr(usage, name, None)
            if value is not None:
                self._counts[name] = value


def _identify(kwargs: dict[str, Any], meter: Meter, options: Options) -> None:
    if meter.tier is not None:  # degrade: the tier's model and max_tokens
        rewrite(kwargs, meter.tier, "max_tokens")
    metadata = kwargs.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    if not isinstance(metadata.get("user_id"), str):
        kwargs["metadata"] = {**metadata, "user_id": options.identifier(meter)}


def prepare_messages(kwargs: dict[str, Any], meter: Meter, options: Options) -> Tap | None:
    _identify(kwargs, meter, options)
    return MessageTap() if kwargs.get("stream") is True else None


def prepare_messages_helper(kwargs: dict[str, Any], meter: Meter, options: Options) -> Tap | None:
    _identify(kwargs, meter, options)
    return None
