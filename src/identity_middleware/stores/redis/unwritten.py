"""What an admission counts of this process's usage that Redis is not known to have applied."""

from __future__ import annotations

from typing import NamedTuple


class Unwritten(NamedTuple):
    """A charge's usage as an admission counts it (open, being written, or left unsure by an outage):
    cost (nanos), tokens, and the charge's id (once Redis has applied the charge, its marker says so
    and the admission does not count it)."""

    cost: int
    tokens: int
    charge_id: str
