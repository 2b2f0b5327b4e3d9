"""How a list of identities is filtered and ordered, and one cursor page of it (plain values, no I/O)."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from .errors import IdentityNotFound
from .models import Identity

__all__ = ["IdentityOrder", "matches", "micros", "sorted_page"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def micros(moment: datetime) -> int:
    """An aware instant in whole microseconds since the epoch (exact, unlike a float timestamp):
    negated, it sorts newest first."""
    return (moment - _EPOCH) // _MICROSECOND


class IdentityOrder(str, enum.Enum):
    """The orders a list may take. ``created`` (ascending ``_id``) is the default and the cheap one;
    ``display_name`` is A to Z (case-insensitive, identities without one last), ``updated`` is the most
    recently updated first. Ties go by ``_id``, so every order is total and cursors are stable."""

    CREATED = "created"
    DISPLAY_NAME = "display_name"
    UPDATED = "updated"


def matches(identity: Identity, search: str | None, tags: Sequence[str] | None,
            all_tags: Sequence[str] | None = None) -> bool:
    """The list filters: ``search`` a case-insensitive substring of external id, display name or email;
    ``tags`` keeps identities with any of them, ``all_tags`` those with every one."""
    if search:
        needle = search.casefold()
        haystacks = (identity.external_id, identity.display_name or "", identity.email or "")
        if not any(needle in text.casefold() for text in haystacks):
            return False
    if tags and not set(tags).intersection(identity.tags):
        return False
    return not all_tags or set(all_tags).issubset(identity.tags)


def _key(identity: Identity, order: IdentityOrder) -> tuple[object, ...]:
    if order is IdentityOrder.DISPLAY_NAME:
        name = identity.display_name
        return (name is None, (name or "").casefold(), name or "", identity.id)
    if order is IdentityOrder.UPDATED:
        return (-micros(identity.updated), identity.id)  # newest first
    return (identity.id,)


def sorted_page(identities: Iterable[Identity], order: IdentityOrder, limit: int, starting_after: str | None,
                ending_before: str | None, search: str | None = None, tags: Sequence[str] | None = None,
                all_tags: Sequence[str] | None = None) -> tuple[list[Identity], bool]:
    """One page of ``identities`` (all of them, unfiltered) in ``order``, and whether more match beyond it.

    Cursors are ``_id`` values of identities that exist (filtered out or not); an unknown cursor raises
    :class:`IdentityNotFound` naming it. Paging walks back from ``ending_before`` when it is the only
    cursor, as the default order does.
    """
    everyone = list(identities)
    by_id = {identity.id: identity for identity in everyone}
    low = high = None
    for cursor in (starting_after, ending_before):
        if cursor is not None and cursor not in by_id:
            raise IdentityNotFound(cursor)
    if starting_after is not None:
        low = _key(by_id[starting_after], order)
    if ending_before is not None:
        high = _key(by_id[ending_before], order)
    window = sorted(
        (identity for identity in everyone
         if (low is None or _key(identity, order) > low) and (high is None or _key(identity, order) < high)
         and matches(identity, search, tags, all_tags)),
        key=lambda identity: _key(identity, order))
    if ending_before is not None and starting_after is None:
        return window[-limit:], len(window) > limit
    return window[:limit], len(window) > limit
