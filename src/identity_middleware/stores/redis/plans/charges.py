"""Charges: the settlements of one identity in one time window, summed as they arrive.

A settlement is added to its identity's open charge when it is buffered, and only the sums are
kept (usage per model, the reservations it releases, the cost charged to each lease): a request
leaves no object of its own behind while it waits to be written. Garbage collection is why: what a
request leaves in the buffer survives young collections, is promoted, and brings the next full
collection of the whole heap nearer (see bench/README.md, "Garbage collection").
"""

from __future__ import annotations

import base64
import itertools
import os
from dataclasses import dataclass, field
from datetime import datetime

from ....core.admission import ModelUsage, Reservation, Settlement, Usage
from ..keys import Window


def _new_process() -> str:
    """96 random bits from the OS in 16 characters: this process's part of every charge id."""
    return base64.urlsafe_b64encode(os.urandom(12)).decode()


_process = _new_process()
_serial = itertools.count(1)


def _forked() -> None:  # a forked worker must not make its parent's ids
    global _process
    _process = _new_process()


os.register_at_fork(after_in_child=_forked)


def charge_id() -> str:
    """Unique across processes and forked workers: the process's 96 random bits, then a serial
    number (in hex). A syscall per charge was what ``os.urandom`` for each one cost."""
    return f"{_process}{next(_serial):x}"


@dataclass(slots=True, eq=False)
class Charge:
    """The settlements of one identity in one time window, applied by one settle script call.

    Open while the buffer adds to it, until a flush takes it. Its ``id`` is given when it opens:
    the script records it (``SET NX`` with a TTL, in the same script), so a charge sent again after
    a timeout or a broken connection, when Redis may have applied it already, is a no-op (the buffer
    keeps a charge whose outcome is unknown and retries it as it is, never regrouped), and a sync
    admission that counts an open charge's usage itself skips it once Redis has applied it.
    """

    identity_id: str
    window: Window
    now: datetime  # its first settlement's instant: the one scoped budgets and alerts are charged at
    usage: Usage = field(default_factory=Usage)  # summed; ``usage.error`` is unused, see ``errors``
    count: int = 0  # settlements summed in
    errors: int = 0  # of which answered with an error
    held: list[str] = field(default_factory=list)  # "amount:id" of the reservations it releases
    scoped: list[Reservation] = field(default_factory=list)  # those that hold global budgets too
    leased: dict[str, int] = field(default_factory=dict)  # lease id -> the cost charged to it
    # project, API-key and match budget id -> [cost, tokens] its requests owe it (Settlement.charged)
    charged: dict[str, list[int]] = field(default_factory=dict)
    id: str = field(default_factory=charge_id)

    def add(self, settlement: Settlement) -> int:
        """Sum ``settlement`` in; how many reservations it adds to those the charge releases (0 or 1)."""
        usage, total = settlement.usage, self.usage
        total.cost += usage.cost
        total.input_tokens += usage.input_tokens
        total.output_tokens += usage.output_tokens
        total.unpriced += usage.unpriced
        for model, share in usage.models.items():
            found = total.models.get(model)
            if found is None:
                found = total.models[model] = ModelUsage()
            found.merge(share)
        self.count += 1
        self.errors += usage.error
        for budget_id in settlement.charged:
            owed = self.charged.get(budget_id)
            if owed is None:
                owed = self.charged[budget_id] = [0, 0]
            owed[0] += usage.cost
            owed[1] += usage.input_tokens + usage.output_tokens
        reservation = settlement.reservation
        if reservation is None:
            return 0
        if reservation.budgets:
            self.scoped.append(reservation)
        if reservation.lease:
            self.leased[reservation.lease] = self.leased.get(reservation.lease, 0) + usage.cost
            return 0
        self.held.append(f"{reservation.amount}:{reservation.id}")
        return 1


Open = dict[tuple[str, datetime], Charge]  # open charges by identity and window start


def sum_into(charges: Open, settlement: Settlement, window: Window, now: datetime) -> int:
    """Add ``settlement`` (at ``now``, in ``window``) to its identity's open charge, opening one if
    needed; how many entries that adds (a charge opened, a reservation to release)."""
    key = (settlement.identity_id, window.start)
    charge = charges.get(key)
    opened = charge is None
    if charge is None:
        charge = charges[key] = Charge(settlement.identity_id, window, now)
    return opened + charge.add(settlement)

