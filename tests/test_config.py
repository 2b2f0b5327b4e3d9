"""One configuration object: declared once, validated once, the same for every shell and Django settings."""

from __future__ import annotations

from decimal import Decimal

import pytest

from identity_middleware import Budget, Config, IdentityMiddleware, IdentityWSGIMiddleware, Period
from identity_middleware.config import InvalidOption
from identity_middleware.django.conf import KEYS
from identity_middleware.flow import Flow
from identity_middleware.stores import MemoryStore


def test_defaults() -> None:
    config = Config()
    assert isinstance(config.store, MemoryStore) and config.max_body_size == 1_048_576
    assert config.header_names == ("X-Identity-Id", "X-ORQ-IDENTITY-ID") and config.on_store_error == "open"


def test_budgets_and_estimates_are_normalised_once() -> None:
    config = Config(default_budgets={"daily": "0.20"}, estimates={"/v1/chat": Decimal("0.02")})
    assert config.default_budgets == (Budget(period=Period.DAILY, amount=Decimal("0.20")),)
    assert config.estimates == {"/v1/chat": 20_000_000}
    assert Config(default_budgets=[{"period": "weekly", "amount": "1"}]).default_budgets[0].period is Period.WEEKLY


@pytest.mark.parametrize(("options", "error"), [
    ({"on_store_error": "maybe"}, ValueError),
    ({"max_body_size": -1}, ValueError),
    ({"sources": []}, ValueError),
    ({"sources": ["body", "body"]}, ValueError),
    ({"sources": ["cookie"]}, ValueError),
    ({"sources": "auth"}, ValueError),
    ({"may_act_for": "admin"}, TypeError),
    ({"body_timeout": 0}, ValueError),
    ({"header_names": "X-Identity-Id"}, ValueError),
    ({"store": "redis://x"}, TypeError),
    ({"resolver": "not callable"}, TypeError),
    ({"default_budgets": "daily"}, TypeError),
    ({"no_such_option": 1}, TypeError),
])
def test_bad_options_fail_at_construction(options: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        Config(**options)  # type: ignore[arg-type]


def test_no_identity_headers_at_all_is_a_valid_choice() -> None:
    assert Config(header_names=()).header_names == ()
    assert Config(sources=["auth"]).sources == ("auth",)


def test_every_shell_takes_the_same_options() -> None:
    async def app(scope: object, receive: object, send: object) -> None: ...

    options = {"store": MemoryStore(), "require_identity": True, "header_names": ["X-User"],
               "estimates": {"/": "0.01"}}
    assert IdentityMiddleware(app, **options).config == Config(**options)  # type: ignore[arg-type]
    wsgi = IdentityWSGIMiddleware(lambda environ, start: [], **options)  # type: ignore[arg-type]
    assert wsgi.config == Config(**options)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        IdentityWSGIMiddleware(lambda environ, start: [], requre_identity=True)


def test_django_settings_keys_are_the_options_upper_cased() -> None:
    assert set(KEYS) == {name.upper() for name in Config.option_names()} | {"STORE_URL"} | {
        "PROVIDERS", "NOTIFIERS", "NOTIFIER_SECRET"}  # the options of the store built from STORE_URL
    config = Config.from_settings({"REQUIRE_IDENTITY": True, "MAX_BODY_SIZE": 10, "UNKNOWN": 1})
    assert config.require_identity and config.max_body_size == 10


def test_an_invalid_option_is_named_with_what_is_wrong() -> None:
    with pytest.raises(InvalidOption) as raised:
        Config.of(default_budgets={"daily": "ten dollars"}, rate_limit="lots")
    assert [(problem.option, problem.where) for problem in raised.value.problems] == [
        ("default_budgets", "['daily']"), ("rate_limit", "")]
    assert "default_budgets['daily']" in str(raised.value) and "'ten dollars'" in str(raised.value)


def test_building_the_options_leaves_the_store_as_it_was() -> None:
    calls: list[dict[str, object]] = []
    store = MemoryStore(providers={"gpt-4o": "openai"}, notifiers={"ops": calls.append})
    alerts = store.alerts
    for config in (Config(store=store), Config.of(store=store, require_identity=True)):
        Flow(config)
    assert store.providers == {"gpt-4o": "openai"} and store.alerts is alerts and calls == []


@pytest.mark.parametrize("option", ["providers", "notifiers", "notifier_secret"])
def test_a_store_option_given_to_the_middleware_says_where_it_goes(option: str) -> None:
    with pytest.raises(InvalidOption) as raised:
        Config.of(**{option: {}, "require_identity": True, "requre_identity": True})
    assert [(problem.option, problem.message) for problem in raised.value.problems] == [
        (option, f"{option}= is an option of the store, not of the middleware: "
                 f"MemoryStore({option}=...) or RedisStore.from_url(url, {option}=...)"),
        ("requre_identity", raised.value.problems[1].message)]
    assert "no such option" in raised.value.problems[1].message


def test_the_store_validates_its_options_as_the_middleware_validated_them() -> None:
    with pytest.raises(InvalidOption) as raised:
        MemoryStore(providers={"gpt-4o": 4}, notifiers={"ops": "ftp://x", "dev": print}, notifier_secret=b"")
    assert [str(problem) for problem in raised.value.problems] == [
        'providers: a dict of model name to provider, e.g. {"gpt-4o": "openai"}',
        "notifiers['ops']: an http(s) URL or a callable",
        "notifier_secret: a non-empty str or bytes (or None)"]
    assert MemoryStore(notifiers={"dev": print}).alerts is not None
    assert MemoryStore(notifier_secret="s").alerts is None  # a secret alone sends nothing
