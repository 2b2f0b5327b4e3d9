"""The store contract for team (CEL ``match``), project and API-key budgets and the what-if check:
the same suite on every store configuration (memory, Redis with and without the accelerated
transports, leased, the Cluster), sync and async."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

import test_store_contract as contract
from identity_middleware.core.admission import AdmissionRequest, Settlement, Usage
from identity_middleware.core.budgets import BudgetChanges, BudgetExists, BudgetSpec
from identity_middleware.core.models import IdentityInput

# The contract's configurations and fixtures, shared (pytest finds fixtures by module attribute).
Api = contract.Api
store_kind, clock, now, stores, store, api = (contract.store_kind, contract.clock, contract.now, contract.stores,
                                            contract.store, contract.api)

TEAM_ML = 'metadata.team == "ml"'


def request(api: Api, external_id: str, cost: str = "0", *, tokens: int = 0, settle: bool = True,
            **facts: Any) -> Any:
    """One request: admitted with ``facts`` (model, project, api_key, headers, estimate), then, when
    admitted and ``settle``, settled with ``cost`` as the middleware does (``charged`` included)."""
    admission = api.admit(AdmissionRequest(external_id, **facts))
    if admission.allowed and settle:
        usage = Usage()
        usage.add(int(Decimal(cost) * 1_000_000_000), tokens, 0, facts.get("model"))
        api.settle(Settlement(admission.identity.id, usage, admission.reservation, None, admission.charged))
        api.flush()
    return admission


def member(api: Api, external_id: str, team: str) -> None:
    api.create(IdentityInput(id=external_id, metadata={"team": team}))


def test_a_project_budget_covers_that_project_only_and_names_itself(api: Api) -> None:
    budget = api.create_budget(BudgetSpec(scope="project", target="apollo", period="daily", amount="0.10"))
    assert request(api, "a", "0.06", project="apollo").allowed
    assert request(api, "b", "0.04", project="apollo").allowed
    blocked = request(api, "c", project="apollo")
    assert not blocked.allowed and blocked.blocked.budget_id == budget.id and blocked.blocked.scope == "project"
    assert request(api, "c", project="gemini").allowed
    assert request(api, "c").allowed  # no project: not under the project's budget
    assert api.budget_usage(budget.id).amount == Decimal("0.1")


def test_an_api_key_budget_counts_tokens_of_requests_made_with_that_key(api: Api) -> None:
    budget = api.create_budget(BudgetSpec(scope="api_key", target="key_1", period="monthly", token_limit=100))
    assert request(api, "a", tokens=60, api_key="key_1").allowed
    assert request(api, "b", tokens=40, api_key="key_1").allowed
    blocked = request(api, "a", api_key="key_1")
    assert not blocked.allowed and blocked.blocked.scope == "api_key" and blocked.blocked.token_limit == 100
    assert request(api, "a", api_key="key_2").allowed
    assert api.budget_usage(budget.id).tokens == 100


def test_a_team_budget_is_shared_by_the_identities_whose_metadata_names_the_team(api: Api) -> None:
    for name, team in (("ann", "ml"), ("ben", "ml"), ("cat", "infra")):
        member(api, name, team)
    budget = api.create_budget(BudgetSpec(scope="match", match=TEAM_ML, period="daily", amount="0.10"))
    assert budget.target is None and budget.match == TEAM_ML
    assert request(api, "ann", "0.07").allowed
    assert request(api, "ben", "0.03").allowed
    for name in ("ann", "ben"):
        blocked = request(api, name)
        assert not blocked.allowed and blocked.blocked.budget_id == budget.id and blocked.blocked.scope == "match"
    assert request(api, "cat").allowed
    assert request(api, "dan").allowed  # no metadata.team: the expression errs, which is no match
    assert api.budget_usage(budget.id).amount == Decimal("0.1")


def test_membership_follows_the_identitys_metadata_and_the_budgets_expression(api: Api) -> None:
    member(api, "ann", "ml")
    member(api, "cat", "infra")
    budget = api.create_budget(BudgetSpec(scope="match", match=TEAM_ML, period="daily", amount="0.05"))
    assert request(api, "ann", "0.05").allowed
    assert request(api, "cat").allowed
    api.update("cat", metadata={"team": "ml"})  # a new metadata version: cat is in the team now
    assert not request(api, "cat").allowed
    api.update_budget(budget.id, BudgetChanges(match='metadata.team == "infra"'))  # a new expression
    assert request(api, "ann").allowed and request(api, "cat").allowed  # neither is in "infra"
    member(api, "dan", "infra")
    assert not request(api, "dan").allowed  # the budget keeps what it counted: 0.05 of 0.05
    assert api.budget_usage(budget.id).amount == Decimal("0.05")


def test_a_body_upsert_moves_the_identity_between_teams_in_the_same_admission(api: Api) -> None:
    api.create_budget(BudgetSpec(scope="match", match=TEAM_ML, period="daily", amount="0.01"))
    assert request(api, "ann", "0.01", upsert=IdentityInput(id="ann", metadata={"team": "ml"})).allowed
    assert request(api, "ben", upsert=IdentityInput(id="ben", metadata={"team": "infra"})).allowed
    assert not request(api, "ben", upsert=IdentityInput(id="ben", metadata={"team": "ml"})).allowed


def test_an_expression_reads_the_request_variables(api: Api) -> None:
    api = api.built_with(providers={"gpt-4o": "openai"})
    expression = ('provider == "openai" && model_id == "openai/gpt-4o" && project == "apollo" && api_key == "k1"'
                  ' && headers["x-tier"] == "free" && identity.startsWith("u_")')
    budget = api.create_budget(BudgetSpec(scope="match", match=expression, period="daily", amount="0.01"))
    facts: dict[str, Any] = {"model": "gpt-4o", "project": "apollo", "api_key": "k1", "headers": {"x-tier": "free"}}
    assert request(api, "u_1", "0.01", **facts).allowed
    blocked = request(api, "u_2", **facts)
    assert not blocked.allowed and blocked.blocked.budget_id == budget.id
    for changed in ({"model": "gpt-4o-mini"}, {"project": "gemini"}, {"api_key": "k2"},
                    {"headers": {"x-tier": "paid"}}, {"headers": {}}):
        assert request(api, "u_2", **{**facts, **changed}).allowed, changed
    assert request(api, "v_1", **facts).allowed


def test_the_tightest_of_every_budget_that_applies_refuses(api: Api) -> None:
    member(api, "ann", "ml")
    api.create_budget(BudgetSpec(scope="identity", target="ann", period="daily", amount="1.00"))
    team = api.create_budget(BudgetSpec(scope="match", match=TEAM_ML, period="daily", amount="0.20"))
    api.create_budget(BudgetSpec(scope="project", target="apollo", period="daily", amount="5"))
    api.create_budget(BudgetSpec(scope="workspace", period="monthly", amount="10"))
    assert request(api, "ann", "0.20", project="apollo").allowed
    blocked = request(api, "ann", project="apollo")
    assert not blocked.allowed and blocked.blocked.budget_id == team.id


def test_an_estimate_is_held_on_a_team_budget_until_settled(api: Api) -> None:
    member(api, "ann", "ml")
    member(api, "ben", "ml")
    api.create_budget(BudgetSpec(scope="match", match=TEAM_ML, period="daily", amount="1"))
    first = request(api, "ann", estimate=600_000_000, settle=False)
    assert first.allowed and first.charged
    assert not request(api, "ben", estimate=600_000_000, settle=False).allowed
    usage = Usage()
    usage.add(100_000_000, 0, 0, None)
    api.settle(Settlement(first.identity.id, usage, first.reservation, None, first.charged))
    api.flush()
    assert request(api, "ben", estimate=600_000_000).allowed


def test_one_match_budget_per_expression_and_period(api: Api) -> None:
    api.create_budget(BudgetSpec(scope="match", match=TEAM_ML, period="daily", amount="1"))
    with pytest.raises(BudgetExists):
        api.create_budget(BudgetSpec(scope="match", match=TEAM_ML, period="daily", amount="2"))
    api.create_budget(BudgetSpec(scope="match", match=TEAM_ML, period="monthly", amount="2"))
    kinds = {budget.scope.value for budget, _ in api.list_budgets().data}
    assert kinds == {"match"}


def test_the_check_answers_as_admission_would_and_writes_nothing(api: Api) -> None:
    member(api, "ann", "ml")
    api.create_budget(BudgetSpec(scope="identity", target="ann", period="daily", amount="1.00"))
    team = api.create_budget(BudgetSpec(scope="match", match=TEAM_ML, period="daily", amount="0.50",
                                        requests_per_minute=100))
    api.create_budget(BudgetSpec(scope="api_key", target="k1", period="daily", token_limit=1000))
    assert request(api, "ann", "0.30", tokens=10, api_key="k1").allowed
    before = api.budget_usage(team.id)
    result = api.check("ann", api_key="k1", estimate="0.10")
    assert result.allowed and result.rejection is None
    assert result.cost is not None and result.cost.limit == Decimal("0.5") and result.cost.remaining == Decimal("0.2")
    assert result.tokens is not None and (result.tokens.limit, result.tokens.consumed) == (1000, 10)
    assert result.requests is not None and result.requests.limit == 100 and result.requests.consumed == 1
    refused = api.check("ann", estimate="0.30")
    assert not refused.allowed and refused.rejection is not None
    assert refused.rejection.budget_id == team.id and refused.rejection.scope_kind == "match"
    assert refused.rejection.dimension == "cost"
    assert api.budget_usage(team.id) == before  # nothing reserved, no request counted
    # metadata given stands for the identity's own; an unknown identity has only the global budgets
    assert api.check("ann", metadata={"team": "infra"}, estimate="0.60").allowed
    assert not api.check("nobody", metadata={"team": "ml"}, estimate="0.30").allowed
    assert api.check().allowed and api.check().cost is None
