"""Every store operation as a sans-IO plan: a generator that yields Redis commands and gets replies.

The sync and async stores drive the same plans (``send`` the reply of each yielded step), so the
argument building, reply parsing and the order of round trips exist once; only the client call
differs. A plan yields a :class:`Call` (one command), an :class:`Eval` (one script by SHA) or a
:class:`Batch` (several, pipelined in one round trip; the reply is the list of their replies).
"""

from __future__ import annotations

import builtins
import json
import threading
import uuid
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any, TypeVar

from ...core.admission import Admission, AdmissionRequest, BudgetState, Reservation, Settlement, decide
from ...core.errors import IdentityExists, IdentityNotFound
from ...core.ids import is_ulid, new_ulid
from ...core.models import (
    Budget,
    BudgetStatus,
    Identity,
    IdentityInput,
    IdentityPage,
    IdentityUpdate,
    Metrics,
    budget_status,
    metrics_from_totals,
)
from ...core.money import to_nanos
from ...core.periods import UTC, Period, period_bounds, period_key
from ..base import METRIC_DAYS, check_limit, matches
from .keys import PERIODS, KeySchema, Window, identity_tag, window
from .scripts import ADMIT, METRICS, SETTLE, STATE, Script

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call:
    """One command: a redis-py client method and its arguments."""

    method: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class Eval:
    """One Lua script call by SHA."""

    script: Script
    keys: Sequence[str]
    args: Sequence[str | int]
    packed_keys: bytes = b""  # the keys already in the Redis protocol (cached with them), or b""


@dataclass(frozen=True, slots=True)
class Batch:
    """Several commands pipelined (not a transaction) in one round trip."""

    steps: Sequence[Call | Eval]


Step = Call | Eval | Batch
Plan = Generator[Step, Any, T]

_PROFILE = ("display_name", "email", "avatar_url", "tags", "metadata")
_LIST_CHUNK = 200
_TAG_CACHE_LIMIT = 100_000


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _encode(name: str, value: Any) -> str:
    # tags/metadata set to None mean "clear" (as MemoryStore does); JSON is canonical so equal
    # values compare equal inside the script and an unchanged upsert leaves `updated` alone.
    if value is None and name in ("tags", "metadata"):
        value = [] if name == "tags" else {}
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _field_args(changes: dict[str, Any]) -> list[str]:
    args = [str(len(changes))]
    for name, value in changes.items():
        args += [name, _encode(name, value)]
    return args


def _as_map(reply: Any) -> dict[str, str]:
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def _known(fields: dict[str, str]) -> str:
    return f"{fields['u']} {fields['t']}"


def _identity(fields: dict[str, str]) -> Identity:
    profile = {name: json.loads(fields[name]) for name in _PROFILE if name in fields}
    return Identity(id=fields["u"], external_id=fields["x"], created=datetime.fromisoformat(fields["c"]),
                    updated=datetime.fromisoformat(fields["t"]), **profile)


class Plans:
    """The store's operations as plans, over one key schema, timezone and reservation TTL."""

    def __init__(self, prefix: str, tz: tzinfo, reservation_ttl: float) -> None:
        self.keys = KeySchema(prefix)
        self.tz = tz
        self.reservation_ttl = reservation_ttl
        self._tags: dict[str, str] = {}  # ULID -> hash tag; immutable facts, so caching is safe
        self._tags_lock = threading.Lock()
        # hash tag -> the window its keys were built for, those keys, and them in the Redis protocol
        self._keysets: dict[str, tuple[Window, builtins.list[str], bytes]] = {}
        # hash tag -> ("<ULID> <updated>", the record): the admit script sends the record only when
        # it differs (changed here or by another process), so an unchanged one is not re-parsed
        self._records: dict[str, tuple[str, Identity]] = {}

    # -- locating identities ---------------------------------------------------------------------
    def _remember(self, ulid: str, tag: str) -> None:
        with self._tags_lock:
            if len(self._tags) >= _TAG_CACHE_LIMIT:
                self._tags.clear()
            self._tags[ulid] = tag

    def _eval(self, script: Script, tag: str, current: Window, args: Sequence[str | int]) -> Eval:
        cached = self._keysets.get(tag)
        if cached is None or cached[0] is not current:
            keys = self.keys.window_keys(tag, current)
            packed = b"".join(b"$%d\r\n%s\r\n" % (len(key), key) for key in (key.encode() for key in keys))
            if len(self._keysets) >= _TAG_CACHE_LIMIT:
                self._keysets.clear()
            cached = self._keysets[tag] = (current, keys, packed)
        return Eval(script, cached[1], args, cached[2])

    def _cache(self, tag: str, fields: dict[str, str]) -> Identity:
        identity = _identity(fields)
        if len(self._records) >= _TAG_CACHE_LIMIT:
            self._records.clear()
        self._records[tag] = (_known(fields), identity)
        return identity

    def _tag_lookup(self, ulid: str) -> Call:
        return Call("zrangebylex", (self.keys.identities, f"[{ulid}:", f"({ulid};", 0, 1))

    def tags_of(self, ulids: Iterable[str]) -> Plan[dict[str, str]]:
        """Hash tags of ULIDs (from the cache, else one pipelined lookup); unknown ULIDs left out."""
        found: dict[str, str] = {}
        missing: builtins.list[str] = []
        for ulid in ulids:
            tag = self._tags.get(ulid)
            if tag is None:
                missing.append(ulid)
            else:
                found[ulid] = tag
        if missing:
            replies = yield Batch([self._tag_lookup(ulid) for ulid in missing])
            for ulid, members in zip(missing, replies, strict=True):
                if members:
                    found[ulid] = members[0].partition(":")[2]
                    self._remember(ulid, found[ulid])
        return found

    def fetch(self, identity_id: str) -> Plan[tuple[Identity, str]]:
        """The record and its tag: by external id first, else by ULID."""
        tag = identity_tag(identity_id)
        fields = _as_map((yield Call("hgetall", (self.keys.record(tag),))))
        if fields.get("x") == identity_id:
            self._remember(fields["u"], tag)
            return _identity(fields), tag
        if is_ulid(identity_id):
            tags = yield from self.tags_of([identity_id])
            if identity_id in tags:
                tag = tags[identity_id]
                fields = _as_map((yield Call("hgetall", (self.keys.record(tag),))))
                if fields.get("u") == identity_id:
                    return _identity(fields), tag
        raise IdentityNotFound(identity_id)

    def retrieve(self, identity_id: str) -> Plan[Identity]:
        identity, _ = yield from self.fetch(identity_id)
        return identity

    # -- record writes ---------------------------------------------------------------------------
    def _write(self, mode: str, external_id: str, changes: dict[str, Any], now: datetime, *,
               may_create: bool = True, refused: bool = False, estimate: int = 0, reservation_id: str = "",
               default_budgets: Sequence[Budget] = (), tag: str | None = None, known: str = "",
               ulid: str | None = None) -> Eval:
        if tag is None:
            tag = identity_tag(external_id)
        if ulid is None:
            ulid = new_ulid()
        current = window(now, self.tz)
        args: builtins.list[str | int] = [
            mode, external_id, ulid, now.isoformat(), _ms(now), int(may_create), int(refused), estimate,
            reservation_id, int(self.reservation_ttl * 1000), current.metric_expire_at, known,
            *_field_args(changes), len(default_budgets),
        ]
        for budget in default_budgets:
            args += [budget.period.value, to_nanos(budget.amount)]
        return self._eval(ADMIT, tag, current, args)

    def _indexed(self, reply: Any, tag: str, cached: tuple[str, Identity] | None = None) -> Plan[Identity]:
        """The record from a script reply (``cached`` when it sent none: unchanged); a new one is
        added to the global list (its own slot)."""
        if cached is not None and not isinstance(reply[2], (list, dict)):
            return cached[1]
        identity = self._cache(tag, _as_map(reply[2]))
        self._remember(identity.id, tag)
        if reply[1]:
            yield Call("zadd", (self.keys.identities, {f"{identity.id}:{tag}": 0}))
        return identity

    def create(self, identity: IdentityInput) -> Plan[Identity]:
        now = _now(None)
        changes = {name: value for name, value in identity.changes().items() if value is not None}
        reply = yield self._write("create", identity.id, changes, now)
        if reply[0] == 2:
            raise IdentityExists(identity.id)
        return (yield from self._indexed(reply, identity_tag(identity.id)))

    def update(self, identity_id: str, fields: dict[str, Any]) -> Plan[Identity]:
        changes = IdentityUpdate.parse(fields).changes()
        identity, _ = yield from self.fetch(identity_id)
        tag = identity_tag(identity.external_id)
        reply = yield self._write("update", identity.external_id, changes, _now(None), tag=tag)
        if reply[0] == 0:
            raise IdentityNotFound(identity_id)
        return self._cache(tag, _as_map(reply[2]))

    def delete(self, identity_id: str) -> Plan[None]:
        identity, tag = yield from self.fetch(identity_id)
        # Unlisted first, then deleted: a crash in between leaves a record that admission still
        # finds, never a listed member without a record.
        yield Call("zrem", (self.keys.identities, f"{identity.id}:{tag}"))
        self._records.pop(tag, None)
        yield Call("delete", tuple(self.keys.all_identity_keys(tag, _now(None), self.tz)))

    # -- reads -----------------------------------------------------------------------------------
    def _states(self, reply: Any, now: datetime) -> builtins.list[BudgetState]:
        states = []
        for index, amount, spent, reserved in reply:
            period = PERIODS[int(index) - 1]
            start, end = period_bounds(period, now, self.tz)
            states.append(BudgetState(period, int(amount), int(spent), int(reserved), start, end))
        states.sort(key=lambda state: PERIODS.index(state.period))
        return states

    def _statuses(self, reply: Any, now: datetime) -> builtins.list[BudgetStatus]:
        return [budget_status(s.period, s.amount, s.spent, s.reserved, s.period_start, s.resets_at)
                for s in self._states(reply, now)]

    def _state_eval(self, tag: str, now: datetime) -> Eval:
        return self._eval(STATE, tag, window(now, self.tz), [_ms(now)])

    def _metrics_eval(self, tag: str, now: datetime) -> Eval:
        return Eval(METRICS, self.keys.metric_keys(tag, now, METRIC_DAYS), [])

    @staticmethod
    def _metrics(reply: Sequence[str]) -> Metrics:
        totals = [0] * 5
        for index, value in enumerate(reply):
            totals[index % 5] += int(value)
        return metrics_from_totals(*totals)

    def budget_status(self, identity_id: str, now: datetime | None) -> Plan[builtins.list[BudgetStatus]]:
        moment = _now(now)
        _, tag = yield from self.fetch(identity_id)
        return self._statuses((yield self._state_eval(tag, moment)), moment)

    def metrics(self, identity_id: str, now: datetime | None) -> Plan[Metrics]:
        moment = _now(now)
        _, tag = yield from self.fetch(identity_id)
        return self._metrics((yield self._metrics_eval(tag, moment)))

    def list(self, limit: int, starting_after: str | None, ending_before: str | None, search: str | None,
             tags: Sequence[str] | None, include_metrics: bool, include_budgets: bool) -> Plan[IdentityPage]:
        check_limit(limit)
        backward = bool(ending_before and not starting_after)
        low = f"({starting_after};" if starting_after else "-"
        high = f"({ending_before}" if ending_before else "+"
        chunk = limit + 1 if not (search or tags) else max(limit + 1, _LIST_CHUNK)
        page: builtins.list[tuple[Identity, str]] = []
        has_more = False
        while not has_more:
            if backward:
                members = yield Call("zrevrangebylex", (self.keys.identities, high, low, 0, chunk))
            else:
                members = yield Call("zrangebylex", (self.keys.identities, low, high, 0, chunk))
            if not members:
                break
            if backward:
                high = f"({members[-1]}"
            else:
                low = f"({members[-1]}"
            pairs = [member.partition(":")[::2] for member in members]
            replies = yield Batch([Call("hgetall", (self.keys.record(tag),)) for _, tag in pairs])
            for (ulid, tag), reply in zip(pairs, replies, strict=True):
                fields = _as_map(reply)
                if fields.get("u") != ulid:
                    continue  # deleted between the two reads
                identity = _identity(fields)
                if matches(identity, search, tags):
                    if len(page) == limit:
                        has_more = True
                        break
                    page.append((identity, tag))
            if len(members) < chunk:
                break
        if backward:
            page.reverse()
        if not (include_metrics or include_budgets) or not page:
            return IdentityPage(data=[identity for identity, _ in page], has_more=has_more)
        now = _now(None)
        steps: builtins.list[Call | Eval] = []
        for _, tag in page:
            if include_metrics:
                steps.append(self._metrics_eval(tag, now))
            if include_budgets:
                steps.append(self._state_eval(tag, now))
        replies = iter((yield Batch(steps)))
        data = []
        for identity, _ in page:
            extra: dict[str, Any] = {}
            if include_metrics:
                extra["metrics"] = self._metrics(next(replies))
            if include_budgets:
                extra["budgets"] = self._statuses(next(replies), now)
            data.append(identity.model_copy(update=extra))
        return IdentityPage(data=data, has_more=has_more)

    # -- budgets ---------------------------------------------------------------------------------
    def set_budget(self, identity_id: str, budget: Budget) -> Plan[None]:
        _, tag = yield from self.fetch(identity_id)
        yield Call("hset", (self.keys.budgets(tag), budget.period.value, to_nanos(budget.amount)))

    def remove_budget(self, identity_id: str, period: Period | str) -> Plan[None]:
        period = Period(period)
        _, tag = yield from self.fetch(identity_id)
        yield Call("hdel", (self.keys.budgets(tag), period.value))

    def reset_budget(self, identity_id: str, period: Period | str) -> Plan[None]:
        period = Period(period)
        _, tag = yield from self.fetch(identity_id)
        now = _now(None)
        # One DEL of two keys in one slot: the period's spend and its reservations go together.
        yield Call("delete", (self.keys.spend(tag, period_key(period, now, self.tz)),
                              self.keys.reservations(tag, period)))

    # -- the request path ------------------------------------------------------------------------
    def admit(self, request: AdmissionRequest) -> Plan[Admission]:
        now = _now(request.now)
        upsert = request.upsert
        changes = upsert.changes() if upsert is not None else {}
        reservation_id = uuid.uuid4().hex if request.estimate > 0 else ""
        tag = identity_tag(request.external_id)
        cached = self._records.get(tag)
        # A ULID is made only for an identity this process has not seen (else the script asks).
        ulid = "" if cached is not None else None
        while True:
            reply = yield self._write(
                "admit", request.external_id, changes, now, may_create=upsert is not None or request.create_missing,
                refused=request.refused, estimate=request.estimate, reservation_id=reservation_id,
                default_budgets=request.default_budgets, tag=tag, known=cached[0] if cached is not None else "",
                ulid=ulid,
            )
            if reply[0] != 3:
                break
            ulid = None
        if reply[0] == 0:
            self._records.pop(tag, None)
            return Admission(None)
        identity = yield from self._indexed(reply, tag, cached)
        states = self._states(reply[3], now)
        if reply[4]:
            return Admission(identity, decide(states, request.estimate, now))
        if not reply[5]:
            return Admission(identity)
        expires = now + timedelta(seconds=self.reservation_ttl)
        periods = tuple(state.period.value for state in states)
        return Admission(identity, None, Reservation(reservation_id, identity.id, request.estimate, expires, periods))

    def settle(self, settlements: Sequence[Settlement]) -> Plan[int]:
        """Commit settlements in one pipelined round trip (plus one for uncached tags). Returns how
        many were charged (a deleted identity's are dropped, as MemoryStore does)."""
        tags = yield from self.tags_of({settlement.identity_id for settlement in settlements})
        # One script call per identity and time window: their usage summed, reservations released.
        groups: dict[tuple[str, Window], builtins.list[Settlement]] = {}
        for settlement in settlements:
            if settlement.identity_id in tags:
                key = (settlement.identity_id, window(_now(settlement.now), self.tz))
                group = groups.get(key)
                if group is None:
                    groups[key] = [settlement]
                else:
                    group.append(settlement)
        if not groups:
            return 0
        steps = [self._settle_eval(ulid, current, group, tags[ulid]) for (ulid, current), group in groups.items()]
        replies = yield Batch(steps)
        return sum(int(reply) * len(group) for reply, group in zip(replies, groups.values(), strict=True))

    def _settle_eval(self, ulid: str, current: Window, group: Sequence[Settlement], tag: str) -> Eval:
        cost = input_tokens = output_tokens = errors = 0
        members: builtins.list[str] = []
        models: dict[str, int] = {}
        for settlement in group:
            usage = settlement.usage
            cost += usage.cost
            input_tokens += usage.input_tokens
            output_tokens += usage.output_tokens
            errors += usage.error
            for model, count in usage.models.items():
                models[model] = models.get(model, 0) + count
            reservation = settlement.reservation
            if reservation is not None:
                members.append(f"{reservation.amount}:{reservation.id}")
        args: builtins.list[str | int] = [ulid, cost, input_tokens, output_tokens, len(group), errors,
                                          current.expire_at, " ".join(members)]
        for model, count in models.items():
            args += [model, count]
        return self._eval(SETTLE, tag, current, args)
