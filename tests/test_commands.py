"""One grammar, two faces: the console script and ``manage.py identities`` run the same commands alike."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest

import django_project

django_project.setup()

from django.core.management import CommandError, call_command  # noqa: E402  (Django is configured above)
from django.test import override_settings  # noqa: E402

from django_project.settings import SITE  # noqa: E402
from identity_middleware import cli  # noqa: E402
from identity_middleware.stores import MemoryStore, Store  # noqa: E402

Outcome = tuple[int, str, str]  # exit code, stdout, stderr
Face = Callable[[Store, list[tuple[str, ...]]], list[Outcome]]

# A whole operator's session, failures included (exit 1: missing or existing; exit 2: invalid input).
SESSION: list[tuple[str, ...]] = [
    ("list",),
    ("create", "ops", "--display-name", "Ops Team", "--email", "ops@example.com", "--tag", "team",
     "--metadata", "plan=pro"),
    ("create", "ops"),
    ("create", "bad", "--email", "not-an-email"),
    ("budget", "set", "ops", "daily", "1.00"),
    ("budget", "set", "ops", "monthly", "ten"),
    ("record", "ops", "--cost", "0.25", "--input-tokens", "10", "--output-tokens", "5", "--model", "gpt"),
    ("record", "ops", "--error"),
    ("record", "ops", "--cost", "-1"),
    ("budget", "status", "ops"),
    ("budget", "status", "ops", "--json"),
    ("list",),
    ("list", "--json", "--tag", "team"),
    ("list", "--search", "nobody"),
    ("show", "ops"),
    ("budget", "reset", "ops", "daily"),
    ("budget", "reset", "ops", "weekly"),
    ("budget", "remove", "ops", "daily"),
    ("budget", "status", "ops"),
    ("delete", "ops"),
    ("show", "ops"),
]
EXIT_CODES = [0, 0, 1, 2, 0, 2, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]

_ULID = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b")
_RATE = re.compile(r'"burn_rate": "[0-9.]+"')
_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")


@pytest.fixture(scope="module", autouse=True)
def site() -> Iterator[None]:
    with override_settings(**SITE):
        yield


def console_script(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Face:
    def run(store: Store, session: list[tuple[str, ...]]) -> list[Outcome]:
        monkeypatch.setattr(cli, "store_from_url", lambda url: store)
        outcomes = []
        for argv in session:
            code = cli.main(list(argv))
            captured = capsys.readouterr()
            # The store is injected, so the in-memory default's note (tested in test_cli) is not this face's.
            outcomes.append((code, captured.out, captured.err.replace(cli.memory_note(serving=False) + "\n", "")))
        return outcomes

    return run


def manage_py(store: Store, session: list[tuple[str, ...]]) -> list[Outcome]:
    outcomes = []
    with override_settings(IDENTITY_MIDDLEWARE={"STORE": store}):
        for argv in session:
            out = io.StringIO()
            try:
                call_command("identities", *argv, stdout=out)
            except CommandError as error:
                outcomes.append((error.returncode, out.getvalue(), f"error: {error}\n"))
            else:
                outcomes.append((0, out.getvalue(), ""))
    return outcomes


def _comparable(outcomes: list[Outcome]) -> list[Outcome]:
    """Ids and timestamps differ between two stores; everything else must not."""
    def plain(text: str) -> str:  # a forecast's rate moves with the clock: its own tests pin it
        return _RATE.sub('"burn_rate": "<rate>"', _INSTANT.sub("<instant>", _ULID.sub("<ulid>", text)))

    return [(code, plain(out), plain(err)) for code, out, err in outcomes]


def test_the_console_script_and_manage_py_give_the_same_outputs_for_one_session(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    by_script = console_script(monkeypatch, capsys)(MemoryStore(), SESSION)
    by_django = manage_py(MemoryStore(), SESSION)
    assert [code for code, _, _ in by_script] == EXIT_CODES
    assert _comparable(by_django) == _comparable(by_script)
    assert by_script[2][2] == "error: identity 'ops' already exists\n"
    assert by_script[-1] == (1, "", "error: identity 'ops' not found\n")


def test_both_faces_leave_the_store_in_the_same_state(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    stores: list[Store] = [MemoryStore(), MemoryStore()]
    console_script(monkeypatch, capsys)(stores[0], SESSION[:12])
    manage_py(stores[1], SESSION[:12])
    for store in stores:
        metrics = store.metrics("ops")
        assert (metrics.total_cost, metrics.total_tokens, metrics.total_requests) == (Decimal("0.25"), 15, 2)
        statuses = store.budget_status("ops")
        assert [(s.period.value, s.amount, s.spent) for s in statuses] == [("daily", 1, Decimal("0.25"))]


def test_manage_py_raises_command_error_with_the_exit_code() -> None:
    with override_settings(IDENTITY_MIDDLEWARE={"STORE": MemoryStore()}):
        with pytest.raises(CommandError, match=r"^identity 'ghost' not found$") as missing:
            call_command("identities", "show", "ghost", stdout=io.StringIO())
        assert missing.value.returncode == 1
        with pytest.raises(CommandError, match="invalid amount") as invalid:
            call_command("identities", "budget", "set", "ghost", "daily", "-5", stdout=io.StringIO())
        assert invalid.value.returncode == 2


@pytest.mark.parametrize("argv", [("budget", "set", "x", "hourly", "1"), ("budget", "x", "daily", "1"),
                                  ("reset", "x", "daily"), ("record",),
                                  ("budgets", "create", "--scope", "team-ml", "--period", "daily"),
                                  ("budgets", "create", "--scope", "workspace", "--period", "hourly"),
                                  ("budgets", "create", "--period", "daily", "--amount", "1"),
                                  ("budgets", "show"), ("budgets", "list", "--scope-kind", "team"),
                                  ("budgets", "check", "--estimate")])
def test_both_faces_refuse_what_the_grammar_does_not_have(argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(argv))
    assert exit_info.value.code == 2
    with override_settings(IDENTITY_MIDDLEWARE={"STORE": MemoryStore()}), pytest.raises(CommandError):
        call_command("identities", *argv, stdout=io.StringIO())


# Scoped budgets by id, beside the per-identity view. "{id}" stands for the id the last create printed.
BUDGETS_SESSION: list[tuple[str, ...]] = [
    ("budgets", "list"),
    ("budgets", "create", "--scope", "model", "--target", "openai/gpt-4o", "--period", "daily", "--amount", "1.00",
     "--alert", "50", "--notify", "ops"),
    ("budgets", "create", "--scope", "model", "--target", "openai/gpt-4o", "--period", "daily", "--amount", "2"),
    ("budgets", "create", "--scope", "workspace", "--period", "monthly"),
    ("budgets", "create", "--scope", "provider", "--period", "daily", "--amount", "1"),
    ("budgets", "create", "--scope", "workspace", "--period", "daily", "--amount", "-1"),
    ("budgets", "create", "--scope", "workspace", "--period", "daily", "--tokens", "10", "--alert", "0:tokens"),
    ("budgets", "create", "--scope", "identity", "--target", "ops", "--period", "one_time", "--tokens", "1000",
     "--rpm", "60", "--amount", "5"),
    ("record", "ops", "--cost", "0.25", "--input-tokens", "10", "--output-tokens", "5", "--model", "openai/gpt-4o"),
    ("budgets", "list"),
    ("budgets", "list", "--scope-kind", "identity", "--json"),
    ("budgets", "list", "--scope-kind", "model", "--target", "nothing"),
    ("budgets", "show", "{id}"),
    ("budgets", "reset", "{id}"),
    ("budgets", "delete", "{id}"),
    ("budgets", "show", "{id}"),
    ("budgets", "delete", "{id}"),
    ("budgets", "create", "--scope", "team", "--target", "ml", "--period", "daily", "--amount", "0.10"),
    ("budgets", "create", "--scope", "match", "--period", "daily", "--amount", "1"),
    ("budgets", "create", "--scope", "match", "--match", "metadata.team ==", "--period", "daily", "--amount", "1"),
    ("budgets", "create", "--scope", "project", "--target", "apollo", "--period", "daily", "--amount", "1"),
    ("budgets", "check", "--identity", "ops", "--metadata", "team=ml", "--project", "apollo", "--estimate", "0.20"),
    ("budgets", "check", "--identity", "ops", "--project", "apollo", "--estimate", "0.50"),
    ("budgets", "list", "--scope-kind", "match", "--scope-kind", "project"),
    ("budget", "set", "ops", "daily", "3"),
    ("budgets", "list", "--scope-kind", "identity"),
    ("budget", "status", "ops"),
]
BUDGETS_EXIT_CODES = [0, 0, 1, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 2, 2, 0, 1, 0, 0, 0, 0, 0]
_BUDGET_ID = re.compile(r"\bb[gi]_[0-9A-HJKMNP-TV-Z]{26}(_[a-z_]+)?")


def _in_steps(face: Face, store: Store) -> list[Outcome]:
    """Run ``BUDGETS_SESSION`` one command at a time, putting the last created budget's id in."""
    outcomes: list[Outcome] = []
    budget_id = ""
    for argv in BUDGETS_SESSION:
        (outcome,) = face(store, [tuple(budget_id if arg == "{id}" else arg for arg in argv)])
        if argv[:2] == ("budgets", "create") and outcome[0] == 0:
            budget_id = json.loads(outcome[1])["id"]
        outcomes.append(outcome)
    return outcomes


def test_both_faces_manage_scoped_budgets_alike(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    stores: list[Store] = [MemoryStore(), MemoryStore()]
    by_script = _in_steps(console_script(monkeypatch, capsys), stores[0])
    by_django = _in_steps(manage_py, stores[1])
    assert [code for code, _, _ in by_script] == BUDGETS_EXIT_CODES

    def plain(outcomes: list[Outcome]) -> list[Outcome]:
        return _comparable([(code, _BUDGET_ID.sub("<budget>", out), _BUDGET_ID.sub("<budget>", err))
                            for code, out, err in outcomes])

    assert plain(by_django) == plain(by_script)
    assert by_script[0][1] == "no budgets\n"
    assert by_script[2][2].startswith("error: a budget for this scope, target and period exists already: bg_")
    assert by_script[3][2] == ("error: invalid budget: give at least one of amount, token_limit or "
                               "rate_limit.requests_per_minute\n")
    created = json.loads(by_script[7][1])
    assert (created["scope"], created["target"], created["period"], created["amount"]) == (
        "identity", "ops", "one_time", "5.00")
    (listed,) = json.loads(by_script[10][1])
    assert listed["usage"] == {"amount": "0.25", "tokens": 15, "requests": 0}
    table = by_script[9][1].splitlines()
    assert table[0].split() == ["ID", "SCOPE", "TARGET", "PERIOD", "SPENT_USD", "TOKENS", "REQUESTS/MIN", "ACTIVE"]
    assert any(line.split()[1:6] == ["model", "openai/gpt-4o", "daily", "0.25/1.00", "15"] for line in table[1:])
    assert by_script[13][1] == f"reset budget {created['id']}: spent 0.00 USD, 0 tokens\n"
    assert by_script[15][2] == f"error: budget {created['id']!r} not found\n"
    team = json.loads(by_script[17][1])
    assert (team["scope"], team["target"], team["match"]) == ("match", None, 'metadata.team == "ml"')
    assert by_script[18][2] == "error: --match CEL goes with --scope match, and --scope match needs it\n"
    assert "does not parse" in by_script[19][2]
    refused, fits = json.loads(by_script[21][1]), json.loads(by_script[22][1])
    assert refused["allowed"] is False and refused["rejection"]["scope_kind"] == "match"
    assert refused["cost"] == {"limit": "0.10", "consumed": "0.00", "remaining": "0.10"}
    assert fits["allowed"] is True and fits["rejection"] is None and fits["cost"]["remaining"] == "1.00"
    assert [line.split()[1] for line in by_script[23][1].splitlines()[1:]] == ["match", "project"]
    assert [line.split()[3] for line in by_script[25][1].splitlines()[1:]] == ["daily"]  # the per-identity view
    for store in stores:
        (model,) = store.list_budgets(scope_kinds=["model"]).data
        assert model[0].alerts[0].notifier_ids == ("ops",) and model[1].amount == Decimal("0.25")
