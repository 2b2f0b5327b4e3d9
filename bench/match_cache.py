"""How often a match budget's CEL expression is evaluated: once per identity record and the
variables it reads, not once per admission.

A performance guard, so it lives here and not in the test spec (issue 22); what the index answers
is tested in tests/test_core_matching.py::

    .venv/bin/python -m bench.match_cache      # prints the evaluations per step; exit 1 off the expected

An evaluation hands the request's variables to the CEL library, which converts each one every
time (``MatchIndex.evaluated``: 13.6 µs for all eight variables): the index keeps each answer per
identity record and per the values of the variables its expressions read. The library's
``cel.compile`` is wrapped here so that each program counts its ``execute`` calls.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import cel

from identity_middleware.core.admission import AdmissionRequest
from identity_middleware.core.budgets import ScopedBudget
from identity_middleware.core.cel import compiled
from identity_middleware.core.matching import MatchIndex
from identity_middleware.core.models import Identity

NOW = datetime(2026, 12, 7, tzinfo=UTC)


class Counted:
    """A compiled CEL program whose evaluations are counted."""

    def __init__(self, program: Any) -> None:
        self.program = program
        self.calls = 0

    def execute(self, variables: object) -> object:
        self.calls += 1
        return self.program.execute(variables)

    def variables(self) -> object:
        return self.program.variables()


def counting_compile(programs: list[Counted]) -> Callable[[str], Counted]:
    real = cel.compile

    def compile_counted(text: str) -> Counted:
        programs.append(Counted(real(text)))
        return programs[-1]

    return compile_counted


def steps() -> list[tuple[str, list[int], list[int]]]:
    """Each step's name, the evaluations of both expressions so far, and what is expected."""
    programs: list[Counted] = []
    real = cel.compile
    cel.compile = counting_compile(programs)  # type: ignore[assignment]
    compiled.cache_clear()  # compiled anew, through the counting compile
    try:
        budgets = [ScopedBudget(id=budget_id, scope="match", match=text, amount="1", created_at=NOW, updated_at=NOW)
                   for budget_id, text in (("bg_team", 'metadata.team == "ml"'), ("bg_project", 'project == "apollo"'))]
        index = MatchIndex(budgets)
    finally:
        cel.compile = real
        compiled.cache_clear()
    for program in programs:  # what checking the budgets evaluated is not the index's
        program.calls = 0
    ann = Identity.model_validate({"_id": "01JD000000000000000000TEST", "external_id": "ann",
                                   "metadata": {"team": "ml"}, "created": NOW, "updated": NOW})
    request = AdmissionRequest("ann", project="apollo", model="gpt-4o")
    found: list[tuple[str, list[int], list[int]]] = []

    def step(name: str, expected: list[int]) -> None:
        found.append((name, [program.calls for program in programs], expected))

    index.matched(request, ann, {})
    step("first admission", [1, 1])
    for _ in range(5):  # same record, same project: no evaluation (the model is read by neither)
        index.matched(AdmissionRequest("ann", project="apollo", model="gpt-4o-mini"), ann, {})
    step("five more, same record and project", [1, 1])
    moved = ann.model_copy(update={"metadata": {"team": "infra"}})  # the record changed: a new record
    index.matched(request, moved, {})
    index.matched(AdmissionRequest("ann", project="gemini"), moved, {})
    step("a new record, then another project", [3, 3])
    index.matched(request, moved, {"gpt-4o": "openai"})  # another providers map: the cache starts over
    step("another providers map", [4, 4])
    return found


def main() -> int:
    found = steps()
    for name, calls, expected in found:
        print(f"{name:40} evaluations {calls} (expected {expected})")
    return 0 if all(calls == expected for _, calls, expected in found) else 1


if __name__ == "__main__":
    raise SystemExit(main())
