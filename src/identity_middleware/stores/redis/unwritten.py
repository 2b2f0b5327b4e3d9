"""What an admission counts of this process's usage that Redis is not known to have applied.

The charges an admission counts (open, being written, or left unsure by an outage) are written as
one string, ``"<cost> <tokens> <charge id>"`` per charge, space-separated: a snapshot of each as it
was when looked up, alive across the admission's round trip as nothing the garbage collector tracks
(a list of tuples per admission made its young collections three times as frequent with 32 requests
in flight). The admission sends their total (:func:`total`), or, when the script asks for them, each
charge's usage (:func:`usages`) with its marker's key (:func:`charge_ids`): once Redis has applied a
charge, its marker says so and the admission does not count it.
"""

from __future__ import annotations


def charge(cost: int, tokens: int, charge_id: str) -> str:
    """One charge's part of the string (the parts of several are joined by a space)."""
    return f"{cost} {tokens} {charge_id}"


def total(unwritten: str) -> str:
    """``"<cost> <tokens>"``: the charges' total."""
    if unwritten.count(" ") == 2:  # one charge (most admissions): its own figures
        return unwritten.rpartition(" ")[0]
    parts = unwritten.split(" ")
    return f"{sum(map(int, parts[0::3]))} {sum(map(int, parts[1::3]))}"


def usages(unwritten: str) -> str:
    """``"<cost> <tokens>"`` of each charge, space-separated (admit.lua's marked form)."""
    parts = unwritten.split(" ")
    return " ".join(f"{cost} {tokens}" for cost, tokens in zip(parts[0::3], parts[1::3], strict=True))


def charge_ids(unwritten: str) -> list[str]:
    """The charges' ids, in the order of :func:`usages`."""
    return unwritten.split(" ")[2::3]
