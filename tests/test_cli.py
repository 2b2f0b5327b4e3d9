"""The identity-middleware command line: real main([...]) runs over memory and Redis, and a real serve."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest

from identity_middleware import cli
from identity_middleware.stores import MemoryStore, Store
from waiting import wait_until

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A store URL whose state outlives one invocation (memory: one store shared by every run)."""
    if request.param == "memory":
        shared = MemoryStore()
        monkeypatch.setattr(cli, "store_from_url", lambda url: shared)
        return "memory://"
    import redis

    url = str(request.getfixturevalue("redis_url")).rsplit("/", 1)[0] + "/5"
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


@pytest.fixture
def run(store_url: str, capsys: pytest.CaptureFixture[str]) -> Run:
    def invoke(*argv: str) -> tuple[int, str, str]:
        code = cli.main(["--store-url", store_url, *argv])
        captured = capsys.readouterr()
        # The in-memory store's note has its own test; here stderr holds what the command said.
        return code, captured.out, captured.err.replace(cli.memory_note(serving=False) + "\n", "")

    return invoke


def test_create_then_show_prints_the_record_with_metrics_and_budgets(run: Run) -> None:
    code, out, _ = run("create", "user_1", "--display-name", "Jane", "--email", "jane@example.com",
                       "--tag", "a", "--tag", "b", "--metadata", "plan=pro")
    assert code == 0
    created = json.loads(out)
    assert created["external_id"] == "user_1" and created["tags"] == ["a", "b"]
    assert created["metadata"] == {"plan": "pro"}
    code, out, _ = run("show", created["_id"])
    shown = json.loads(out)
    assert code == 0 and shown["display_name"] == "Jane"
    assert shown["metrics"]["total_requests"] == 0 and shown["budgets"] == []


def test_create_an_existing_identity_fails_with_exit_1(run: Run) -> None:
    assert run("create", "dup")[0] == 0
    code, out, err = run("create", "dup")
    assert code == 1 and out == "" and "already exists" in err


def test_create_an_invalid_identity_fails_with_exit_2_naming_the_field(run: Run) -> None:
    code, _, err = run("create", "bad", "--email", "not-an-email")
    assert code == 2 and "invalid email" in err
    assert run("create", "bad2", "--metadata", "novalue")[0] == 2
    assert run("show", "bad")[0] == 1


def test_show_an_unknown_identity_fails_with_exit_1(run: Run) -> None:
    code, out, err = run("show", "ghost")
    assert code == 1 and out == "" and err == "error: identity 'ghost' not found\n"


def test_list_prints_an_aligned_table_with_30_day_metrics(run: Run) -> None:
    run("create", "alice", "--display-name", "Alice")
    run("create", "bob-the-builder", "--tag", "vip")
    run("record", "alice", "--cost", "0.0125", "--input-tokens", "100", "--output-tokens", "20", "--model", "m")
    run("record", "alice", "--cost", "1.5", "--error")
    code, out, _ = run("list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["EXTERNAL_ID", "DISPLAY_NAME", "EMAIL", "TAGS", "REQUESTS", "TOKENS", "COST_USD",
                                "ERROR_RATE", "_ID"]
    assert len(lines) == 3
    alice, bob = lines[1], lines[2]
    # aligned: the last column starts at the same place on every row
    assert lines[0].rindex("_ID") == alice.index(alice.split()[-1]) == bob.index(bob.split()[-1])
    assert alice.split() == ["alice", "Alice", "2", "120", "1.5125", "50.0%", alice.split()[-1]]
    assert bob.split()[:6] == ["bob-the-builder", "vip", "0", "0", "0.00", "0.0%"]
    # numbers are right-aligned under their headers
    assert alice.index("1.5125") + len("1.5125") == lines[0].index("COST_USD") + len("COST_USD")


def test_list_json_and_filters(run: Run) -> None:
    run("create", "one", "--tag", "x")
    run("create", "two", "--email", "two@example.com")
    code, out, _ = run("list", "--json")
    records = json.loads(out)
    assert code == 0 and [r["external_id"] for r in records] == ["one", "two"]
    assert records[0]["metrics"]["total_cost"] == "0.00"
    assert [r["external_id"] for r in json.loads(run("list", "--json", "--tag", "x")[1])] == ["one"]
    assert [r["external_id"] for r in json.loads(run("list", "--json", "--search", "EXAMPLE")[1])] == ["two"]


def test_list_an_empty_store(run: Run) -> None:
    assert run("list") == (0, "no identities\n", "")


def test_budget_set_status_reset_remove(run: Run) -> None:
    run("create", "b")
    code, out, _ = run("budget", "set", "b", "daily", "0.20")
    assert code == 0 and out.startswith("b daily: spent 0.00 of 0.20 USD (0%)")
    run("record", "b", "--cost", "0.05")
    code, out, _ = run("budget", "status", "b")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:6] == ["PERIOD", "AMOUNT", "SPENT", "RESERVED", "REMAINING", "PERCENT"]
    assert lines[1].split()[:6] == ["daily", "0.20", "0.05", "0.00", "0.15", "25%"]
    status = json.loads(run("budget", "status", "b", "--json")[1])
    assert status[0]["spent"] == "0.05"
    code, out, _ = run("budget", "reset", "b", "daily")
    assert code == 0 and "spent 0.00 of 0.20" in out
    assert run("budget", "remove", "b", "daily")[0] == 0
    assert run("budget", "status", "b") == (0, "b has no budgets\n", "")


@pytest.mark.parametrize("amount", ["0", "-5", "ten"])
def test_budget_set_with_an_invalid_amount_fails_with_exit_2(run: Run, amount: str) -> None:
    run("create", "b")
    code, _, err = run("budget", "set", "b", "daily", amount)
    assert code == 2 and "invalid amount" in err
    assert run("budget", "status", "b")[1] == "b has no budgets\n"


def test_budget_commands_on_missing_things_fail_with_exit_1(run: Run) -> None:
    assert run("budget", "set", "ghost", "daily", "1")[0] == 1
    run("create", "b")
    code, _, err = run("budget", "remove", "b", "weekly")
    assert code == 1 and "no weekly budget" in err
    assert run("budget", "reset", "b", "weekly")[0] == 1
    assert run("budget", "status", "ghost")[0] == 1


def test_an_unknown_period_is_a_usage_error(run: Run) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run("budget", "set", "b", "hourly", "1")
    assert exit_info.value.code == 2


def test_record_counts_requests_errors_tokens_and_cost(run: Run) -> None:
    run("create", "r")
    assert run("record", "r", "--cost", "0.0000001", "--input-tokens", "7", "--model", "gpt")[0] == 0
    assert run("record", "r", "--error")[0] == 0
    metrics = json.loads(run("show", "r")[1])["metrics"]
    assert metrics["total_cost"] == "0.0000001" and metrics["total_tokens"] == 7
    assert metrics["total_requests"] == 2 and metrics["error_rate"] == 0.5
    assert run("record", "r", "--cost", "-1")[0] == 2
    assert run("record", "r", "--cost", "abc")[0] == 2
    assert run("record", "ghost", "--cost", "1")[0] == 1


def test_delete_removes_the_identity(run: Run) -> None:
    run("create", "d")
    assert run("delete", "d") == (0, "deleted d\n", "")
    assert run("show", "d")[0] == 1


def test_store_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
                                               ) -> None:
    seen: list[str] = []

    def fake(url: str) -> Store:
        seen.append(url)
        return MemoryStore()

    monkeypatch.setattr(cli, "store_from_url", fake)
    monkeypatch.setenv(cli.STORE_URL_ENV, "redis://example.invalid:1/0")
    assert cli.main(["list"]) == 0
    monkeypatch.delenv(cli.STORE_URL_ENV)
    assert cli.main(["list"]) == 0
    assert seen == ["redis://example.invalid:1/0", "memory://"]


def test_the_in_memory_default_says_on_stderr_that_nothing_persists(monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(cli.STORE_URL_ENV, raising=False)
    assert cli.main(["create", "user_1"]) == 0
    assert cli.main(["list"]) == 0
    captured = capsys.readouterr()
    assert captured.out.endswith("no identities\n")  # a fresh store: the first command's identity is gone
    assert captured.err.count("note: the store is in memory (memory://): nothing persists across invocations") == 2
    assert cli.STORE_URL_ENV in captured.err


@pytest.mark.redis
def test_a_redis_store_is_used_without_a_note(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--store-url", redis_url, "list", "--search", "nobody-has-this-name"]) == 0
    assert capsys.readouterr().err == ""


def test_budget_status_writes_money_and_times_as_the_admin_api_does(run: Run, store_url: str) -> None:
    run("create", "user_1")
    run("budget", "set", "user_1", "daily", "5")
    run("record", "user_1", "--cost", "0.0125")
    code, out, _ = run("budget", "status", "user_1", "--json")
    api = json.loads(out)[0]  # the BudgetStatus JSON the admin API serves
    assert code == 0 and api["spent"] == "0.0125" and api["resets_at"].endswith("Z")
    code, out, _ = run("budget", "status", "user_1")
    row = out.splitlines()[1].split()
    assert row == ["daily", "5.00", "0.0125", "0.00", "4.9875", "0.25%", api["resets_at"]]
    _, out, _ = run("budget", "reset", "user_1", "daily")
    assert out == f"user_1 daily: spent 0.00 of 5.00 USD (0%), resets {api['resets_at']}\n"


def test_a_redis_url_without_the_redis_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # as on a machine without the extra: import fails
    for name in [name for name in sys.modules if name.startswith("identity_middleware.stores.redis")]:
        monkeypatch.delitem(sys.modules, name)
    assert cli.main(["--store-url", "redis://localhost:6379/0", "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot open store 'redis://localhost:6379/0': ")
    assert err.endswith(": pip install 'identity-middleware[redis]'\n") and err.count("pip install") == 1


def test_serve_refuses_to_start_without_a_token(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(cli.TOKEN_ENV, raising=False)
    assert cli.main(["serve", "--port", "1"]) == 2
    assert "refusing to serve without a token" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_answers_http_with_the_token_from_the_environment() -> None:
    port = _free_port()
    env = {**os.environ, cli.TOKEN_ENV: "serve-token", cli.STORE_URL_ENV: "memory://"}
    server = subprocess.Popen([sys.executable, "-m", "identity_middleware", "serve", "--port", str(port),
                               "--log-level", "warning"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def answer() -> httpx.Response | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/v2/identities",
                                 headers={"Authorization": "Bearer serve-token"}, timeout=2)
            except httpx.TransportError:
                assert server.poll() is None, server.communicate()[1].decode()
                return None

        response = wait_until(answer, "serve answering HTTP", every=0.1)
        assert response.status_code == 200
        assert response.json() == {"object": "list", "data": [], "has_more": False}
        assert httpx.get(f"http://127.0.0.1:{port}/v2/identities", timeout=2).status_code == 401
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        assert server.stdout is not None and server.stderr is not None
        server.stdout.close()
        said = server.stderr.read().decode()
        server.stderr.close()
    assert said.startswith("note: the store is in memory (memory://): what it holds is lost when the server stops")
