"""The Redis key schema: every key name the store reads or writes, and how long each one lives.

Key schema (``P`` is the configurable prefix, default ``idm``; ``T`` the identity's hash tag)::

    P:identities            ZSET   every identity as member "ULID:T" (score 0), ordered by ULID;
                                   the only global key, in its own Cluster slot
    P:{T}:id                HASH   the record: u (ULID), x (external id), c/t (created/updated, ISO),
                                   display_name, email, avatar_url, tags, metadata (JSON values)
    P:{T}:b                 HASH   budgets: <period> -> amount in nano-USD ("<nanos>[:<expiry ms>]", a
                                   calendar budget with an amount, while live), l:<period> -> what
                                   the scripts enforce and count (see lib.lua), def:<period> -> JSON
    P:{T}:s:<period key>    STRING spend in nano-USD of one period instance, e.g. s:daily:2026-11-22
                                   (INCRBY); expires one day after the period ends
    P:{T}:r:<period>        ZSET   live reservations of one budget: member "<nanos>:<id>", score =
                                   expiry in ms; expired members are pruned by the scripts
    P:{T}:r:one_time        ZSET   live reservations of the one-time budget (as above)
    P:{T}:u:<period key>    HASH   an identity budget's usage since its creation or reset: t tokens,
                                   c cost (one-time only: the others count the spend above),
                                   a:<percent><c|t> alert markers; u:one_time never expires, the
                                   others when the spend counter of their period does
    P:{T}:q                 HASH   admissions per budget and 10 s bucket: "<period>:<bucket>" ->
                                   count (requests in the last minute); pruned by the scripts,
                                   expires 70 s after its newest bucket opened
    P:{T}:d:<YYYY-MM-DD>    HASH   one UTC day's metrics: c cost, i/o tokens, n requests, e errors,
                                   u LLM calls of unpriced models; per model: m:<model> calls,
                                   mc:<model> cost, mi:/mo:<model> input/output tokens; expires 31
                                   days after the day
    P:{T}:h:<YYYY-MM-DDTHH> HASH   one UTC hour's metrics, the same fields as the day's (written by
                                   the same settle call: the console's last 24 hours by hour);
                                   expires 25 hours after the hour began
    P:{T}:n:<SHA-1>         STRING a session's spend in nano-USD (``session=``; INCRBY when each of
                                   its requests settles), keyed by the hex SHA-1 of the session
                                   value; expires ``Session.ttl`` (24 h) after its last charge
    P:{T}:k                 HASH   the top-ups of the identity's one-time budget (credits, topup.lua):
                                   '#' the last sequence number, k:<idempotency key> -> "<sequence>
                                   <amount nanos> <new limit nanos> <time ISO>"; goes with the budget
    P:{T}:c:<charge id>     STRING "1": a settle script call (one identity's batch) was applied;
                                   set NX by that call, so sending it again is a no-op (and a
                                   sync admission that counted the charge's buffered usage
                                   itself does not count it again); expires after the store's
                                   ``settle_id_ttl``

``T`` is the hex SHA-1 of the UTF-8 external id. It is derived from the external id, not the ULID,
because an admission arrives with the external id only: hashing it tells the client which slot
holds the record, so the admission script reaches the record (which doubles as the external id ->
ULID index), budgets, spend, reservations and metrics in one call on one Cluster node. A hex digest
never contains ``{`` or ``}``, so any external id (braces, spaces, unicode) is safe. The way back,
ULID -> T (retrieve/list by ``_id``, settle), is the ``P:identities`` member ``"ULID:T"``, found with a
ZRANGEBYLEX on the ULID prefix and cached in-process (it never changes).

Counters are keyed by the period's start (``period_key``), so a new period starts at zero with no
reset job; old ones expire by TTL. ``P:identities`` is written separately from the per-identity
scripts (another slot): it is added to after the record is created and removed from before the
record is deleted, so a listed member whose record is gone is skipped, never shown half-made.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo

from ...core.metrics import utc_hour
from ...core.periods import UTC, Period, period_bounds, period_key, utc_day
from ..base import METRIC_HOURS

PERIODS: tuple[Period, ...] = tuple(Period)  # script key order: daily, weekly, monthly, yearly
ONE_TIME = "one_time"  # the period of a budget that never resets (its key suffix and period key)
SPEND_MARGIN = timedelta(days=1)  # keeps a counter past its period for app servers with skewed clocks
METRIC_TTL_DAYS = 31
HOUR = timedelta(hours=1)
METRIC_TTL_HOURS = METRIC_HOURS + 1  # an hour's hash outlives the 24 read by an hour


_TAGS: dict[str, str] = {}  # external id -> tag: every admission needs it (bounded: starts over when full)


def identity_tag(external_id: str) -> str:
    """The Cluster hash tag of an identity: hex SHA-1 of its external id (never contains braces)."""
    tag = _TAGS.get(external_id)
    if tag is None:
        if len(_TAGS) >= 100_000:
            _TAGS.clear()
        tag = _TAGS[external_id] = hashlib.sha1(external_id.encode("utf-8", "surrogatepass"),
                                                usedforsecurity=False).hexdigest()
    return tag


def _seconds(delta: timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))


class KeySchema:
    """Key names under one prefix."""

    __slots__ = ("identities", "prefix")

    def __init__(self, prefix: str) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError("the key prefix must be non-empty and contain no braces")
        self.prefix = prefix
        self.identities = f"{prefix}:identities"

    def base(self, tag: str) -> str:
        return f"{self.prefix}:{{{tag}}}"

    def record(self, tag: str) -> str:
        return f"{self.base(tag)}:id"

    def budgets(self, tag: str) -> str:
        return f"{self.base(tag)}:b"

    def spend(self, tag: str, key: str) -> str:
        return f"{self.base(tag)}:s:{key}"

    def reservations(self, tag: str, period: Period | str) -> str:
        return f"{self.base(tag)}:r:{Period(period).value if period != ONE_TIME else ONE_TIME}"

    def usage(self, tag: str, key: str) -> str:
        """An identity budget's usage hash of one period instance (``key``: a period key or ``one_time``)."""
        return f"{self.base(tag)}:u:{key}"

    def requests(self, tag: str) -> str:
        return f"{self.base(tag)}:q"

    def top_ups(self, tag: str) -> str:
        """The ledger of the identity's one-time budget's top-ups."""
        return f"{self.base(tag)}:k"

    def day(self, tag: str, day: date) -> str:
        return f"{self.base(tag)}:d:{day.isoformat()}"

    def hour(self, tag: str, hour: datetime) -> str:
        """One UTC hour's metrics hash (``hour``: any instant in it)."""
        return f"{self.base(tag)}:h:{utc_hour(hour):%Y-%m-%dT%H}"

    def charge(self, tag: str, charge_id: str) -> str:
        return f"{self.base(tag)}:c:{charge_id}"

    def session(self, tag: str, session: str) -> str:
        """A session's spend (``session=``): the hex SHA-1 of the session value, in the identity's slot."""
        digest = hashlib.sha1(session.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()
        return f"{self.base(tag)}:n:{digest}"

    # -- scoped budgets (model, provider, workspace): a registry slot, and each budget its own slot --
    @property
    def budget_defs(self) -> str:
        """HASH budget id -> JSON definition, of every model, provider and workspace budget."""
        return f"{self.prefix}:{{budgets}}:defs"

    @property
    def budget_index(self) -> str:
        """HASH "<scope kind> <target> <period>" -> budget id: one budget per scope, target and period."""
        return f"{self.prefix}:{{budgets}}:keys"

    def scoped(self, budget_id: str, what: str) -> str:
        """A global budget's keys: ``u:<period key>`` usage, ``r`` reservations, ``a:<period key>``
        alerts fired, ``q:<10 s bucket>`` admissions, ``c:<charge id>`` applied settle calls."""
        return f"{self.prefix}:{{{budget_id}}}:{what}"

    def identity_keys(self, tag: str, now: datetime, tz: tzinfo) -> list[str]:
        """The KEYS of every per-identity script (see lib.lua), for the periods containing ``now``."""
        return self.window_keys(tag, window(now, tz))

    def window_keys(self, tag: str, current: Window) -> list[str]:
        base = self.base(tag)
        return [
            f"{base}:id",
            f"{base}:b",
            *(f"{base}:s:{key}" for key in current.spend),
            *(f"{base}:r:{period.value}" for period in PERIODS),
            f"{base}:d:{current.day}",
            f"{base}:r:{ONE_TIME}",
            *(f"{base}:u:{key}" for key in current.spend),
            f"{base}:u:{ONE_TIME}",
            f"{base}:q",
            f"{base}:h:{current.hour}",
        ]

    def metric_keys(self, tag: str, now: datetime, days: int) -> list[str]:
        today = utc_day(now)
        return [self.day(tag, today - timedelta(days=offset)) for offset in range(days)]

    def hour_keys(self, tag: str, now: datetime, hours: int) -> list[str]:
        """The hashes of the last ``hours`` UTC hours up to ``now``, the current one first."""
        return [self.hour(tag, now - offset * HOUR) for offset in range(hours)]

    def all_identity_keys(self, tag: str, now: datetime, tz: tzinfo) -> list[str]:
        """Every key an identity can own at ``now``: current and previous periods, the metric window."""
        keys = [self.record(tag), self.budgets(tag), *(self.reservations(tag, p) for p in (*PERIODS, ONE_TIME)),
                self.usage(tag, ONE_TIME), self.requests(tag), self.top_ups(tag)]
        for period in PERIODS:
            start, _ = period_bounds(period, now, tz)
            for key in (period_key(period, now, tz), period_key(period, start - timedelta(microseconds=1), tz)):
                keys += [self.spend(tag, key), self.usage(tag, key)]
        keys.extend(self.metric_keys(tag, now + timedelta(days=1), METRIC_TTL_DAYS + 2))
        keys.extend(self.hour_keys(tag, now + HOUR, METRIC_TTL_HOURS + 2))
        return keys


@dataclass(frozen=True, slots=True, eq=False)
class Window:
    """What the per-identity scripts need that depends only on time, valid for ``start <= now < end``
    (the overlap of every current period and the UTC hour): the spend key suffixes, the UTC day and
    hour, and when the spend counters and the day's and hour's metrics expire (Unix seconds, the
    same instants as :func:`spend_ttls`/:func:`metric_ttl` from any ``now`` in the window)."""

    start: datetime
    end: datetime
    spend: tuple[str, ...]  # period keys, daily..yearly
    day: str  # today's UTC date, ISO
    hour: str  # this UTC hour, "YYYY-MM-DDTHH"
    spend_expire_at: tuple[int, ...]
    metric_expire_at: int
    hour_expire_at: int
    expire_at: str  # "<daily> <weekly> <monthly> <yearly> <day's metrics> <hour's>" for the settle script
    metrics_expire_at: str  # "<day's metrics> <hour's>": when a refused admission's counts expire (admit.lua)


_windows: dict[tzinfo, Window] = {}


def window(now: datetime, tz: tzinfo = UTC) -> Window:
    """The :class:`Window` containing ``now`` (cached until ``now`` leaves it)."""
    cached = _windows.get(tz)
    if cached is not None and cached.start <= now < cached.end:
        return cached
    bounds = [period_bounds(period, now, tz) for period in PERIODS]
    today = utc_day(now)
    hour_start = utc_hour(now)  # within today's UTC day: the window is the hour's part of every period
    start = max([hour_start, *(low for low, _ in bounds)])
    end = min([hour_start + HOUR, *(high for _, high in bounds)])
    spend_at = tuple(math.ceil((high + SPEND_MARGIN).timestamp()) for _, high in bounds)
    day_start = datetime(today.year, today.month, today.day, tzinfo=UTC)
    metric_at = math.ceil((day_start + timedelta(days=METRIC_TTL_DAYS)).timestamp())
    hour_at = math.ceil((hour_start + METRIC_TTL_HOURS * HOUR).timestamp())
    result = Window(start, end, tuple(period_key(period, now, tz) for period in PERIODS), today.isoformat(),
                    f"{hour_start:%Y-%m-%dT%H}", spend_at, metric_at, hour_at,
                    " ".join(str(at) for at in (*spend_at, metric_at, hour_at)), f"{metric_at} {hour_at}")
    if start <= now < end:
        _windows[tz] = result
    return result


def spend_ttls(now: datetime, tz: tzinfo = UTC) -> list[int]:
    """Seconds each current spend counter must live: to its period's end plus a margin."""
    return [_seconds(period_bounds(period, now, tz)[1] - now + SPEND_MARGIN) for period in PERIODS]


def metric_ttl(now: datetime) -> int:
    """Seconds today's metric hash must live: until it leaves the 30-day window, plus a day."""
    today = utc_day(now)
    leaves = datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(days=METRIC_TTL_DAYS)
    return _seconds(leaves - now)
