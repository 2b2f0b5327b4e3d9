"""What a sync admission counts of this process's usage that Redis has not been sent yet."""

from __future__ import annotations

from typing import NamedTuple


class Unwritten(NamedTuple):
    """An open charge's usage as a sync admission counts it: cost (nanos), tokens, and the charge's id
    (once Redis has applied the charge, its marker says so and the admission does not count it)."""

    cost: int
    tokens: int
    charge_id: str
