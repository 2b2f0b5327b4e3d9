"""Match expressions: parsed by the CEL library at write time, orq's variables, the membership cache."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from identity_middleware.core.admission import AdmissionRequest
from identity_middleware.core.budgets import BudgetSpec, ScopedBudget
from identity_middleware.core.cel import InvalidExpression, compiled
from identity_middleware.core.matching import MatchIndex, variables_of
from identity_middleware.core.models import Identity

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def identity(external_id: str = "ann", **metadata: object) -> Identity:
    return Identity(_id="01JD000000000000000000TEST", external_id=external_id, metadata=metadata, created=NOW,
                    updated=NOW)


def budget(budget_id: str, expression: str) -> ScopedBudget:
    return ScopedBudget(id=budget_id, scope="match", match=expression, amount="1", created_at=NOW, updated_at=NOW)


@pytest.mark.parametrize(("expression", "words"), [
    ("metadata.team ==", "does not parse"),
    ('team == "ml"', "'team'"),
    ("", "1..4096"),
    ("x" * 5000, "1..4096"),
])
def test_an_invalid_expression_is_refused_naming_the_problem(expression: str, words: str) -> None:
    with pytest.raises(ValidationError) as raised:
        BudgetSpec(scope="match", match=expression, amount="1")
    assert words in str(raised.value)


def test_a_scope_and_an_expression_exclude_each_other() -> None:
    with pytest.raises(ValidationError, match="no match expression"):
        BudgetSpec(scope="workspace", match='project == "x"', amount="1")
    with pytest.raises(ValidationError, match="needs its CEL expression"):
        BudgetSpec(scope="match", amount="1")
    with pytest.raises(ValidationError, match="has no target"):
        BudgetSpec(scope="match", target="ml", match='project == "x"', amount="1")


def test_the_variables_an_expression_reads_are_the_librarys_less_comprehension_variables() -> None:
    assert compiled('metadata.team == "ml" && provider == "openai"').variables == {"metadata", "provider"}
    assert compiled('project == "headers model identity"').variables == {"project"}
    assert compiled("headers.exists(h, h == 'x-tier')").variables == {"headers"}
    with pytest.raises(InvalidExpression, match="does not parse"):
        compiled("1 +")
    with pytest.raises(InvalidExpression, match="'nosuch', which is not a CEL function"):
        compiled('nosuch(model) == "x"')
    with pytest.raises(InvalidExpression, match="nests 40 deep"):
        compiled("(" * 40 + "true" + ")" * 40)


def test_the_variables_are_orqs_and_come_from_the_request_and_the_identity() -> None:
    request = AdmissionRequest("ann", model="gpt-4o", project="apollo", api_key="k1", headers={"x-tier": "free"})
    found = variables_of(request, identity(team="ml"), {"gpt-4o": "openai"})
    assert found == {"model": "gpt-4o", "provider": "openai", "model_id": "openai/gpt-4o", "api_key": "k1",
                     "identity": "ann", "project": "apollo", "metadata": {"team": "ml"},
                     "headers": {"x-tier": "free"}}
    bare = variables_of(AdmissionRequest("ann"), None, {})
    assert bare["model"] == bare["provider"] == bare["model_id"] == bare["project"] == bare["api_key"] == ""
    assert bare["metadata"] == {} and bare["headers"] == {}


def test_an_expression_that_errs_on_a_request_does_not_match_it() -> None:
    index = MatchIndex([budget("bg_1", 'metadata.team == "ml"'), budget("bg_2", 'headers["x-tier"] == "free"')])
    assert index.matched(AdmissionRequest("ann"), identity(), {}) == frozenset()
    assert index.matched(AdmissionRequest("ann"), identity(team="ml"), {}) == {"bg_1"}


def test_membership_follows_the_record_the_request_and_the_providers_map() -> None:
    # The index caches each answer (how often it evaluates: python -m bench.match_cache); what it
    # answers is that of a fresh evaluation, whatever it kept.
    index = MatchIndex([budget("bg_team", 'metadata.team == "ml"'), budget("bg_project", 'project == "apollo"')])
    ann = identity(team="ml")
    request = AdmissionRequest("ann", project="apollo", model="gpt-4o")
    assert index.matched(request, ann, {}) == {"bg_team", "bg_project"}
    for _ in range(5):  # same record, same project
        assert index.matched(AdmissionRequest("ann", project="apollo", model="gpt-4o-mini"), ann, {}) == \
            {"bg_team", "bg_project"}
    moved = ann.model_copy(update={"metadata": {"team": "infra"}})  # the record changed: a new record
    assert index.matched(request, moved, {}) == {"bg_project"}
    assert index.matched(AdmissionRequest("ann", project="gemini"), moved, {}) == frozenset()
    assert index.matched(request, moved, {"gpt-4o": "openai"}) == {"bg_project"}  # another providers map
    assert index.matched(request, ann, {"gpt-4o": "openai"}) == {"bg_team", "bg_project"}


def test_an_index_is_kept_while_the_expressions_stay_the_same() -> None:
    first = [budget("bg_1", 'project == "a"'), budget("bg_2", 'project == "b"')]
    index = MatchIndex(first)
    assert index.same_as(reversed(first))
    assert not index.same_as([first[0], budget("bg_2", 'project == "c"')])
    assert not index.same_as(first[:1])
    assert index.wants_headers is False and index.wants_model is False
    assert MatchIndex([budget("bg_3", 'headers["x"] == "y" && model == "m"')]).wants_headers


def test_the_memory_store_never_loads_the_cel_library_without_match_budgets() -> None:
    code = ("import sys\n"
            "from identity_middleware.core.admission import AdmissionRequest\n"
            "from identity_middleware.core.budgets import BudgetSpec\n"
            "from identity_middleware.stores import MemoryStore\n"
            "store = MemoryStore()\n"
            "store.create_budget(BudgetSpec(scope='project', target='p', amount='1'))\n"
            "assert store.admit(AdmissionRequest('u', project='p')).allowed\n"
            "print('cel' in sys.modules)\n"
            "store.create_budget(BudgetSpec(scope='match', match='project == \"p\"', amount='1'))\n"
            "print('cel' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True"]
