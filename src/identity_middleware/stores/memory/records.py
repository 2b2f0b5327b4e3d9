"""The memory store's identity records: by ULID, by external id, and the ULIDs in order for cursor pages."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ...core.errors import IdentityExists, IdentityNotFound
from ...core.ids import new_ulid
from ...core.models import Identity, IdentityInput
from ...core.ordering import matches


class Records:
    """Identity records, immutable once stored (an update stores a new copy). Call under the store's lock."""

    __slots__ = ("by_external", "by_ulid", "order")

    def __init__(self) -> None:
        self.by_ulid: dict[str, Identity] = {}
        self.by_external: dict[str, str] = {}
        self.order: list[str] = []  # ULIDs, ascending

    def ulid_of(self, identity_id: str) -> str:
        """The ULID of an external id (matched first) or of a ULID; raises ``IdentityNotFound``."""
        ulid = self.by_external.get(identity_id)
        if ulid is None and identity_id in self.by_ulid:
            ulid = identity_id
        if ulid is None:
            raise IdentityNotFound(identity_id)
        return ulid

    def insert(self, identity: IdentityInput, now: datetime) -> Identity:
        if identity.id in self.by_external:
            raise IdentityExists(identity.id)
        record = Identity(id=new_ulid(), external_id=identity.id, created=now, updated=now,
                          **{name: value for name, value in identity.changes().items() if value is not None})
        self.by_ulid[record.id] = record
        self.by_external[record.external_id] = record.id
        if not self.order or record.id > self.order[-1]:
            self.order.append(record.id)
        else:
            bisect.insort(self.order, record.id)
        return record

    def apply(self, ulid: str, changes: dict[str, Any], now: datetime) -> Identity:
        """Store the fields that change (``None`` clears tags and metadata); ``updated`` moves only then."""
        record = self.by_ulid[ulid]
        changes = {name: value for name, value in changes.items() if getattr(record, name) != value}
        if name_nulls := [name for name in ("tags", "metadata") if name in changes and changes[name] is None]:
            for name in name_nulls:
                changes[name] = [] if name == "tags" else {}
        if not changes:
            return record
        record = record.model_copy(update={**changes, "updated": now})
        self.by_ulid[ulid] = record
        return record

    def note_source(self, ulid: str, source: str) -> Identity:
        """Keep where the last request's identity came from; not a profile change, so ``updated`` stays."""
        record = self.by_ulid[ulid] = self.by_ulid[ulid].model_copy(update={"last_source": source})
        return record

    def remove(self, ulid: str) -> None:
        record = self.by_ulid.pop(ulid)
        del self.by_external[record.external_id]
        self.order.pop(bisect.bisect_left(self.order, ulid))

    def page(self, limit: int, starting_after: str | None, ending_before: str | None, search: str | None,
             tags: Sequence[str] | None, all_tags: Sequence[str] | None = None) -> tuple[list[str], bool]:
        """The ULIDs of one page in ascending order, and whether more match beyond it."""
        lo = bisect.bisect_right(self.order, starting_after) if starting_after else 0
        hi = bisect.bisect_left(self.order, ending_before) if ending_before else len(self.order)
        window = self.order[lo:hi]
        backwards = bool(ending_before and not starting_after)
        if backwards:
            window = window[::-1]  # walk back from the cursor, then put the page in order
        page: list[str] = []
        has_more = False
        for ulid in window:
            if matches(self.by_ulid[ulid], search, tags, all_tags):
                if len(page) == limit:
                    has_more = True
                    break
                page.append(ulid)
        if backwards:
            page.reverse()
        return page, has_more
