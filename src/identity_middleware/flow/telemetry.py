"""OpenTelemetry span attributes for the request's identity and the flow's decision, when
``opentelemetry-api`` is installed (without it this costs one ``None`` check per request)."""

from __future__ import annotations

import json
from typing import Any

from .steps import Outcome, Refused, Tracked

__all__ = ["annotate"]

try:
    from opentelemetry import trace as _trace
except ImportError:  # an optional dependency
    _trace: Any = None  # type: ignore[no-redef]

IDENTITY = "identity_middleware.identity"
DECISION = "identity_middleware.decision"


def annotate(outcome: Outcome) -> None:
    """Set ``identity_middleware.identity`` and ``identity_middleware.decision`` (``tracked``,
    ``untracked``, ``anonymous`` or the refusal's error type) on the current span, if it records."""
    if _trace is None:
        return
    span = _trace.get_current_span()
    if not span.is_recording():
        return
    if isinstance(outcome, Tracked):
        identity: str | None = outcome.meter.identity.external_id
        decision = "tracked"
    elif isinstance(outcome, Refused):
        identity = None
        decision = json.loads(outcome.error.body)["error"]["type"]
    else:
        identity = outcome.external_id
        decision = "untracked" if identity is not None else "anonymous"
    if identity is not None:
        span.set_attribute(IDENTITY, identity)
    span.set_attribute(DECISION, decision)
