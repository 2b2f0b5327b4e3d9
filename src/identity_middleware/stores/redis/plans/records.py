"""Identity records in Redis as every plan finds them: hash tags (cached), records (cached), script calls."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from datetime import datetime, tzinfo
from typing import Any

from ....core.errors import IdentityNotFound
from ....core.ids import is_ulid, new_ulid
from ....core.models import Budget, Identity
from ....core.money import to_nanos
from ...base import METRIC_DAYS
from .. import unwritten as buffered
from ..keys import KeySchema, Window, identity_tag, window
from ..options import SETTLE_ID_TTL
from ..scripts import ADMIT, METRICS, STATE, Script
from ..steps import Batch, Call, Eval, Plan
from . import codec

_CACHE_LIMIT = 100_000  # entries per cache; past it a cache starts over (a bound, not an LRU)
_NO_CHANGES = ("0",)  # codec.field_args({}): most admissions change nothing



class Records:
    """One key schema, timezone, reservation TTL and settle id TTL, and the caches every plan consults.

    The caches hold facts that never change (ULID -> hash tag) or that the scripts re-check on every
    call (a record's version), so a stale entry costs a round trip, never a wrong answer.
    """

    def __init__(self, prefix: str, tz: tzinfo, reservation_ttl: float, settle_id_ttl: int = SETTLE_ID_TTL) -> None:
        self.keys = KeySchema(prefix)
        self.tz = tz
        self.reservation_ttl = reservation_ttl
        self.settle_id_ttl = settle_id_ttl
        self._tags: dict[str, str] = {}  # ULID -> hash tag
        self._tags_lock = threading.Lock()
        # hash tag -> the window its keys were built for, those keys, and them in the Redis protocol
        self._keysets: dict[str, tuple[Window, list[str], bytes]] = {}
        # hash tag -> ("<ULID> <updated>", the record): the admit script sends the record only when
        # it differs (changed here or by another process), so an unchanged one is not re-parsed
        self._records: dict[str, tuple[str, Identity]] = {}
        self._window: Window | None = None  # the last one window_of answered

    # -- locating identities ---------------------------------------------------------------------
    def remember(self, ulid: str, tag: str) -> None:
        with self._tags_lock:
            if len(self._tags) >= _CACHE_LIMIT:
                self._tags.clear()
            self._tags[ulid] = tag

    def cache(self, tag: str, fields: dict[str, str]) -> Identity:
        identity = codec.identity(fields)
        if len(self._records) >= _CACHE_LIMIT:
            self._records.clear()
        self._records[tag] = (codec.version(fields), identity)
        return identity

    def cached(self, tag: str) -> tuple[str, Identity] | None:
        """The record of ``tag`` as this process last saw it, with its version, or ``None``."""
        return self._records.get(tag)

    def forget(self, tag: str) -> None:
        self._records.pop(tag, None)

    def recache(self, tag: str, identity: Identity) -> None:
        """Replace the cached record of ``tag`` (same version) by ``identity``."""
        cached = self._records.get(tag)
        if cached is not None:
            self._records[tag] = (cached[0], identity)

    def known_ulid(self, external_id: str) -> str | None:
        """The ULID of an identity this process has admitted (cached), else ``None``."""
        cached = self._records.get(identity_tag(external_id))
        return cached[1].id if cached is not None else None

    def tags_of(self, ulids: Iterable[str]) -> Plan[dict[str, str]]:
        """Hash tags of ULIDs (from the cache, else one pipelined lookup); unknown ULIDs left out."""
        found, missing = self.cached_tags(ulids)
        if missing:
            found.update((yield from self.looked_up(missing)))
        return found

    def cached_tags(self, ulids: Iterable[str]) -> tuple[dict[str, str], list[str]]:
        """The hash tags of ``ulids`` this process knows, and the ULIDs it does not."""
        found: dict[str, str] = {}
        missing: list[str] = []
        for ulid in ulids:
            tag = self._tags.get(ulid)
            if tag is None:
                missing.append(ulid)
            else:
                found[ulid] = tag
        return found, missing

    def looked_up(self, ulids: Sequence[str]) -> Plan[dict[str, str]]:
        """The hash tags of ``ulids`` found in the global list (one pipelined lookup), remembered."""
        found: dict[str, str] = {}
        lookups = [Call("zrangebylex", (self.keys.identities, f"[{ulid}:", f"({ulid};", 0, 1)) for ulid in ulids]
        for ulid, members in zip(ulids, (yield Batch(lookups)), strict=True):
            if members:
                found[ulid] = members[0].partition(":")[2]
                self.remember(ulid, found[ulid])
        return found

    def fetch(self, identity_id: str) -> Plan[tuple[Identity, str]]:
        """The record and its tag: by external id first, else by ULID."""
        tag = identity_tag(identity_id)
        fields = codec.as_map((yield Call("hgetall", (self.keys.record(tag),))))
        if fields.get("x") == identity_id:
            self.remember(fields["u"], tag)
            return codec.identity(fields), tag
        if is_ulid(identity_id):
            tags = yield from self.tags_of([identity_id])
            if identity_id in tags:
                tag = tags[identity_id]
                fields = codec.as_map((yield Call("hgetall", (self.keys.record(tag),))))
                if fields.get("u") == identity_id:
                    return codec.identity(fields), tag
        raise IdentityNotFound(identity_id)

    def window_of(self, now: datetime) -> Window:
        """The time window of ``now``: the keys an identity's script calls at ``now`` take (asked
        by each admission and settlement: the last one answered serves while ``now`` is in it)."""
        current = self._window
        if current is None or not current.start <= now < current.end:
            current = self._window = window(now, self.tz)
        return current

    # -- script calls ----------------------------------------------------------------------------
    def eval(self, script: Script, tag: str, current: Window, args: Sequence[str | int]) -> Eval:
        """A per-identity script call; its 11 keys built (and packed) once per tag and window."""
        keys, packed = self._keyset(tag, current)
        return Eval(script, keys, args, packed)

    def marked_eval(self, script: Script, tag: str, current: Window, args: Sequence[str | int],
                    *charge_ids: str, after: Sequence[tuple[str, bytes]] = ()) -> Eval:
        """:meth:`eval` with charges' markers as its next keys (the same hash tag: one slot, one script),
        then the keys ``after`` them (each with itself packed: :func:`.codec.packed`)."""
        keys, packed = self._keyset(tag, current)
        markers = [self.keys.charge(tag, charge_id) for charge_id in charge_ids]
        return Eval(script, [*keys, *markers, *(key for key, _ in after)], args,
                    b"".join([packed, *map(codec.packed, markers), *(bytes_ for _, bytes_ in after)]))

    def _keyset(self, tag: str, current: Window) -> tuple[list[str], bytes]:
        """An identity's keys in ``current`` window, and them in the Redis protocol (cached per tag)."""
        cached = self._keysets.get(tag)
        if cached is None or cached[0] is not current:
            keys = self.keys.window_keys(tag, current)
            packed = b"".join(codec.packed(key) for key in keys)
            if len(self._keysets) >= _CACHE_LIMIT:
                self._keysets.clear()
            cached = self._keysets[tag] = (current, keys, packed)
        return cached[1], cached[2]

    def write(self, mode: str, external_id: str, changes: dict[str, Any], now: datetime, *,
               may_create: bool = True, refused: int = 0, estimate: int = 0, reservation_id: str = "",
               default_budgets: Sequence[Budget] = (), tag: str | None = None, known: str = "",
               ulid: str | None = None, last_source: str | None = None, lease: str = "",
               unwritten: str = "", unconfirmed: bool = False,
               fallbacks: tuple[int, ...] = ()) -> Eval:
        """The admit script in one of its modes (``create``, ``update``, ``admit``); see admit.lua
        (``refused``: 1 refused before admission, 2 refused after it by a global budget; ``lease``: the
        lease to take or renew, see :meth:`.lease.LeasePlans.lease_ask`; ``unwritten``: usage of a
        caller's charges not yet known to be written (:mod:`..unwritten`), each counted unless its
        marker says Redis has applied it, or with ``unconfirmed`` their total alone, which the script answers with {4}
        when the total blocks and the recorded spend alone would not; ``fallbacks``: smaller
        estimates to hold, the first that fits, when ``estimate`` does not)."""
        if tag is None:
            tag = identity_tag(external_id)
        if ulid is None:
            ulid = new_ulid()
        current = self.window_of(now)
        args: list[str | int] = [
            # The ISO time is written only to a new record (a new ULID) or a changed one.
            mode, external_id, ulid, now.isoformat() if ulid or changes else "", codec.ms(now), int(may_create),
            int(refused), estimate,
            reservation_id, int(self.reservation_ttl * 1000), current.metrics_expire_at, known,
            *(codec.field_args(changes) if changes else _NO_CHANGES), len(default_budgets),
        ]
        for budget in default_budgets:
            args += [budget.period.value, to_nanos(budget.amount)]
        args.append(last_source or "")
        if lease or unwritten or fallbacks:
            args.append(lease)
        if unconfirmed and unwritten:
            args.append(f"~{buffered.total(unwritten)}")
        elif unwritten or fallbacks:
            args.append(buffered.usages(unwritten) if unwritten else "")
        if fallbacks:
            args.append(" ".join(map(str, fallbacks)))
        if not unwritten or unconfirmed:
            return self.eval(ADMIT, tag, current, args)
        return self.marked_eval(ADMIT, tag, current, args, *buffered.charge_ids(unwritten))

    def indexed(self, reply: Any, tag: str, cached: tuple[str, Identity] | None = None) -> Plan[Identity]:
        """The record from an admit script reply (``cached`` when it sent none: unchanged); a new
        one is added to the global list (its own slot, so a second step)."""
        if cached is not None and not isinstance(reply[2], (list, dict)):
            return cached[1]
        identity = self.cache(tag, codec.as_map(reply[2]))
        self.remember(identity.id, tag)
        if reply[1]:
            yield Call("zadd", (self.keys.identities, {f"{identity.id}:{tag}": 0}))
        return identity

    def state_eval(self, tag: str, now: datetime) -> Eval:
        return self.eval(STATE, tag, window(now, self.tz), [codec.ms(now)])

    def metrics_eval(self, tag: str, now: datetime, days: int = METRIC_DAYS) -> Eval:
        return Eval(METRICS, self.keys.metric_keys(tag, now, days), [])

    def hourly_eval(self, tag: str, now: datetime, hours: int) -> Eval:
        """The metrics script over the last ``hours`` UTC hours' hashes (the current one first)."""
        return Eval(METRICS, self.keys.hour_keys(tag, now, hours), [])

    def recent_eval(self, tag: str, now: datetime) -> Eval:
        """Today's and the previous UTC day's metrics: an identity's recent spend, which forecasts rate."""
        return self.metrics_eval(tag, now, 2)
