"""Budget headers (``budget_headers=True``) on a response whose cost is known when it starts.

The tightest budget at admission (the largest consumed share) in the IETF httpapi RateLimit header
fields' format (draft-ietf-httpapi-ratelimit-headers), its quota in micro-USD (millionths of a US
dollar, ``qu="micro-usd"``: whole numbers within Structured Fields' 15 digits up to $999,999,999):

    RateLimit-Policy: "monthly";q=20000000;w=2678400;qu="micro-usd"
    RateLimit: "monthly";r=3998000;t=1036800

``q`` is the budget's amount, ``w`` its period's length in seconds (absent for a one-time budget),
``r`` what remains after this request (amount - spend - reservations of requests in flight at
admission - this request's cost, rounded down, never below 0), ``t`` seconds until it resets (absent
for a one-time budget). Our own fields: ``X-Request-Cost``, this request's recorded LLM cost in USD
(a decimal string), and ``X-Budget-Tier``, the degrade tier's name when one applies.

Sent only when the response's cost is complete as it starts: the app's whole response is ready
(not streamed) and no stream of the request (an instrumented call's, a metered body) is open.
A streamed response carries none of them.
"""

from __future__ import annotations

import math
from datetime import datetime

from ..context import Meter
from ..core.money import format_usd, from_nanos
from ..core.periods import UTC

__all__ = ["COST_HEADER", "TIER_HEADER", "budget_headers", "cost_known"]

COST_HEADER = "x-request-cost"
TIER_HEADER = "x-budget-tier"
_MICRO = 1_000  # nano-USD in one micro-USD


def cost_known(meter: Meter) -> bool:
    """Whether the request's cost is complete now: no stream of it is still open."""
    return not meter.streams


def budget_headers(meter: Meter, now: datetime | None = None) -> list[tuple[str, str]]:
    """The header fields for a response of ``meter``'s request, its cost known (lower-case names)."""
    headers = [(COST_HEADER, format_usd(from_nanos(meter.usage.cost)))]
    if meter.tier is not None:
        headers.append((TIER_HEADER, meter.tier.name))
    budget = meter.budget
    if budget is None:
        return headers
    name = '"' + budget.key.replace("\\", "\\\\").replace('"', '\\"') + '"'
    policy = f"{name};q={budget.amount // _MICRO}"
    remaining = max(0, budget.amount - budget.used - meter.usage.cost) // _MICRO
    state = f"{name};r={remaining}"
    if budget.resets_at is not None:
        if budget.period_start is not None:
            policy += f";w={round((budget.resets_at - budget.period_start).total_seconds())}"
        now = now if now is not None else datetime.now(UTC)
        state += f";t={max(0, math.ceil((budget.resets_at - now).total_seconds()))}"
    headers += [("ratelimit-policy", policy + ';qu="micro-usd"'), ("ratelimit", state)]
    return headers
