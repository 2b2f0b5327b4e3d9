"""Plans for identity records: create, retrieve, update, delete, and the paged list."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from ....core.errors import IdentityExists, IdentityNotFound
from ....core.models import Identity, IdentityInput, IdentityPage, IdentityUpdate
from ....core.ordering import IdentityOrder, matches, sorted_page
from ...base import check_limit
from ..keys import identity_tag
from ..steps import Batch, Call, Eval, Plan
from . import codec
from .records import Records

_LIST_CHUNK = 200  # members read per round trip when a search or tag filter skips some


class IdentityPlans:
    """Identity records: create, retrieve, update, delete and list, over :class:`.records.Records`."""

    def __init__(self, records: Records) -> None:
        self.records = records
        self.keys = records.keys

    def retrieve(self, identity_id: str) -> Plan[Identity]:
        identity, _ = yield from self.records.fetch(identity_id)
        return identity

    def create(self, identity: IdentityInput) -> Plan[Identity]:
        changes = {name: value for name, value in identity.changes().items() if value is not None}
        reply = yield self.records.write("create", identity.id, changes, codec.now_or(None))
        if reply[0] == 2:
            raise IdentityExists(identity.id)
        return (yield from self.records.indexed(reply, identity_tag(identity.id)))

    def update(self, identity_id: str, fields: dict[str, Any]) -> Plan[Identity]:
        changes = IdentityUpdate.parse(fields).changes()
        identity, _ = yield from self.records.fetch(identity_id)
        tag = identity_tag(identity.external_id)
        reply = yield self.records.write("update", identity.external_id, changes, codec.now_or(None), tag=tag)
        if reply[0] == 0:
            raise IdentityNotFound(identity_id)
        return self.records.cache(tag, codec.as_map(reply[2]))

    def delete(self, identity_id: str) -> Plan[None]:
        identity, tag = yield from self.records.fetch(identity_id)
        # Unlisted first, then deleted: a crash in between leaves a record that admission still
        # finds, never a listed member without a record.
        yield Call("zrem", (self.keys.identities, f"{identity.id}:{tag}"))
        self.records.forget(tag)
        yield Call("delete", tuple(self.keys.all_identity_keys(tag, codec.now_or(None), self.records.tz)))

    def list(self, limit: int, starting_after: str | None, ending_before: str | None, search: str | None,
             tags: Sequence[str] | None, include_metrics: bool, include_budgets: bool,
             all_tags: Sequence[str] | None = None,
             order: IdentityOrder = IdentityOrder.CREATED) -> Plan[IdentityPage]:
        check_limit(limit)
        if order is IdentityOrder.CREATED:
            page, has_more = yield from self._page(limit, starting_after, ending_before, search, tags, all_tags)
        else:
            page, has_more = yield from self._sorted(limit, starting_after, ending_before, search, tags, all_tags,
                                                     order)
        if not (include_metrics or include_budgets) or not page:
            return IdentityPage(data=[identity for identity, _ in page], has_more=has_more)
        now = codec.now_or(None)
        steps: builtins.list[Call | Eval] = []
        for _, tag in page:
            if include_metrics:
                steps.append(self.records.metrics_eval(tag, now))
            if include_budgets:
                steps += [self.records.state_eval(tag, now), self.records.recent_eval(tag, now)]
        replies = iter((yield Batch(steps)))
        data = []
        for identity, _ in page:
            extra: dict[str, Any] = {}
            if include_metrics:
                extra["metrics"] = codec.metrics(next(replies))
            if include_budgets:
                state = next(replies)
                extra["budgets"] = codec.statuses(state, now, self.records.tz, codec.recent_cost(next(replies)))
            data.append(identity.model_copy(update=extra))
        return IdentityPage(data=data, has_more=has_more)

    def _sorted(self, limit: int, starting_after: str | None, ending_before: str | None, search: str | None,
                tags: Sequence[str] | None, all_tags: Sequence[str] | None,
                order: IdentityOrder) -> Plan[tuple[builtins.list[tuple[Identity, str]], bool]]:
        """A page in another order than the ULIDs': every record is read (in chunks) and sorted here."""
        everyone, _ = yield from self._page(None, None, None, None, None, None)
        tag_of = {identity.id: tag for identity, tag in everyone}
        page, has_more = sorted_page((identity for identity, _ in everyone), order, limit, starting_after,
                                     ending_before, search, tags, all_tags)
        return [(identity, tag_of[identity.id]) for identity in page], has_more

    def _page(self, limit: int | None, starting_after: str | None, ending_before: str | None, search: str | None,
              tags: Sequence[str] | None,
              all_tags: Sequence[str] | None) -> Plan[tuple[builtins.list[tuple[Identity, str]], bool]]:
        """Up to ``limit`` (``None``: all) matching identities with their tags, in ULID order, and whether
        more follow."""
        backward = bool(ending_before and not starting_after)
        low = f"({starting_after};" if starting_after else "-"
        high = f"({ending_before}" if ending_before else "+"
        filtered = bool(search or tags or all_tags)
        chunk = limit + 1 if limit is not None and not filtered else max((limit or 0) + 1, _LIST_CHUNK)
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
                fields = codec.as_map(reply)
                if fields.get("u") != ulid:
                    continue  # deleted between the two reads
                identity = codec.identity(fields)
                if matches(identity, search, tags, all_tags):
                    if len(page) == limit:
                        has_more = True
                        break
                    page.append((identity, tag))
            if len(members) < chunk:
                break
        if backward:
            page.reverse()
        return page, has_more
