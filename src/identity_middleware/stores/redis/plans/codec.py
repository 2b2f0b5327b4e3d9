"""Plain values to script arguments and script replies to models: no keys, no I/O, no state."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import Any

from ....core.admission import BudgetState
from ....core.models import BudgetStatus, Identity, Metrics, budget_status, metrics_from_totals
from ....core.periods import UTC, period_bounds
from ..keys import PERIODS

_PROFILE = ("display_name", "email", "avatar_url", "tags", "metadata")


def now_or(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def packed(key: str) -> bytes:
    """A key as one bulk string of the Redis protocol (script keys are packed once and cached)."""
    data = key.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def encode(name: str, value: Any) -> str:
    # tags/metadata set to None mean "clear" (as MemoryStore does); JSON is canonical so equal
    # values compare equal inside the script and an unchanged upsert leaves `updated` alone.
    if value is None and name in ("tags", "metadata"):
        value = [] if name == "tags" else {}
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def field_args(changes: dict[str, Any]) -> list[str]:
    """Profile changes as the admit script's ``n, name, value, ...`` arguments."""
    args = [str(len(changes))]
    for name, value in changes.items():
        args += [name, encode(name, value)]
    return args


def as_map(reply: Any) -> dict[str, str]:
    """A hash reply as a dict: RESP3 sends a map, RESP2 and Lua a flat list."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def version(fields: dict[str, str]) -> str:
    """``"<ULID> <updated>"``: what the admit script compares to skip sending an unchanged record."""
    return f"{fields['u']} {fields['t']}"


def identity(fields: dict[str, str]) -> Identity:
    profile = {name: json.loads(fields[name]) for name in _PROFILE if name in fields}
    return Identity(id=fields["u"], external_id=fields["x"], created=datetime.fromisoformat(fields["c"]),
                    updated=datetime.fromisoformat(fields["t"]), **profile)


def states(reply: Any, now: datetime, tz: tzinfo) -> list[BudgetState]:
    """Budget states from a script's ``{period index, amount, spent, reserved}`` rows, daily first."""
    result = []
    for index, amount, spent, reserved in reply:
        period = PERIODS[int(index) - 1]
        start, end = period_bounds(period, now, tz)
        result.append(BudgetState(period, int(amount), int(spent), int(reserved), start, end))
    result.sort(key=lambda state: PERIODS.index(state.period))
    return result


def statuses(reply: Any, now: datetime, tz: tzinfo) -> list[BudgetStatus]:
    return [budget_status(s.period, s.amount, s.spent, s.reserved, s.period_start, s.resets_at)
            for s in states(reply, now, tz)]


def metrics(reply: Sequence[str]) -> Metrics:
    """Metrics from the metrics script's flat reply: five counters per day, summed."""
    totals = [0] * 5
    for index, value in enumerate(reply):
        totals[index % 5] += int(value)
    return metrics_from_totals(*totals)
