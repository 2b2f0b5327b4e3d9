"""Clients a user builds and passes to RedisStore: any ``decode_responses``, and a quiet start-up."""

from __future__ import annotations

import warnings
from decimal import Decimal

import pytest
import redis
import redis.asyncio

from identity_middleware.core.admission import AdmissionRequest, Settlement, Usage
from identity_middleware.core.errors import StoreMisconfigured
from identity_middleware.core.models import Budget, IdentityInput
from identity_middleware.core.money import to_nanos
from identity_middleware.stores import RedisOptions, RedisStore

CENT = to_nanos(Decimal("0.01"))


@pytest.mark.parametrize("decode", [False, True])
def test_a_client_given_works_whatever_its_decode_responses(redis_url: str, decode: bool) -> None:
    prefix = f"dec{int(decode)}"
    store = RedisStore(client=redis.Redis.from_url(redis_url, decode_responses=decode),
                       async_client_factory=lambda: redis.asyncio.Redis.from_url(redis_url, decode_responses=decode),
                       options=RedisOptions(prefix=prefix))
    try:
        store.create(IdentityInput(id="u", display_name="Ü"))
        store.set_budget("u", Budget(period="daily", amount="0.01"))
        admission = store.admit(AdmissionRequest("u"))
        assert admission.identity is not None and admission.identity.display_name == "Ü"
        store.settle(Settlement(admission.identity.id, Usage(cost=CENT), None))
        assert store.admit(AdmissionRequest("u")).blocked is not None
        assert store.metrics("u").total_cost == Decimal("0.01")
        assert [identity.external_id for identity in store.list().data] == ["u"]
    finally:
        store.close()


@pytest.mark.anyio
@pytest.mark.parametrize("decode", [False, True])
async def test_an_async_client_from_the_factory_works_whatever_its_decode_responses(
        redis_url: str, decode: bool) -> None:
    store = RedisStore(client=redis.Redis.from_url(redis_url, decode_responses=decode),
                       async_client_factory=lambda: redis.asyncio.Redis.from_url(redis_url, decode_responses=decode),
                       options=RedisOptions(prefix=f"adec{int(decode)}"))
    try:
        await store.acreate(IdentityInput(id="u"))
        await store.aset_budget("u", Budget(period="daily", amount="0.01"))
        admission = await store.aadmit(AdmissionRequest("u"))
        assert admission.identity is not None
        await store.asettle(Settlement(admission.identity.id, Usage(cost=CENT), None))
        assert (await store.aadmit(AdmissionRequest("u"))).blocked is not None
        assert (await store.abudget_status("u"))[0].spent == Decimal("0.01")
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_an_async_store_starts_without_a_warning(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url, prefix="quiet", multiplex=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            await store.acreate(IdentityInput(id="u"))
            await store.aadmit(AdmissionRequest("u"))
    finally:
        await store.aclose()


def test_a_store_given_only_a_sync_client_serves_a_wsgi_app(redis_url: str) -> None:
    from flask import Flask, jsonify

    from identity_middleware import IdentityWSGIMiddleware, current_identity

    store = RedisStore(client=redis.Redis.from_url(redis_url), options=RedisOptions(prefix="synconly"))
    app = Flask(__name__)

    @app.post("/chat")
    def chat() -> object:
        identity = current_identity()
        return jsonify(identity=identity.external_id if identity is not None else None)

    app.wsgi_app = IdentityWSGIMiddleware(app.wsgi_app, store=store)  # type: ignore[method-assign]
    try:
        store.create(IdentityInput(id="u"))
        store.set_budget("u", Budget(period="daily", amount="0.01"))
        reply = app.test_client().post("/chat", json={"identity": {"id": "u"}})
        assert (reply.status_code, reply.json) == (200, {"identity": "u"})
        store.settle(Settlement(store.retrieve("u").id, Usage(cost=CENT), None))
        assert app.test_client().post("/chat", json={"identity": {"id": "u"}}).status_code == 429
    finally:
        store.close()


@pytest.mark.anyio
async def test_a_store_given_one_side_says_what_the_other_side_needs(redis_url: str) -> None:
    sync_only = RedisStore(client=redis.Redis.from_url(redis_url), options=RedisOptions(prefix="oneside"))
    async_only = RedisStore(async_client_factory=lambda: redis.asyncio.Redis.from_url(redis_url),
                            options=RedisOptions(prefix="oneside"))
    try:
        with pytest.raises(StoreMisconfigured, match=r"async_client_factory=lambda: redis\.asyncio\.Redis"):
            await sync_only.acreate(IdentityInput(id="u"))
        with pytest.raises(StoreMisconfigured, match=r"client=redis\.Redis\(\.\.\.\)"):
            async_only.create(IdentityInput(id="u"))
        await async_only.acreate(IdentityInput(id="u"))
        assert sync_only.retrieve("u").external_id == "u"  # one server, one prefix: each side sees the other's
    finally:
        sync_only.close()
        await async_only.aclose()


def test_a_store_needs_a_url_or_a_client() -> None:
    with pytest.raises(ValueError, match="give a URL"):
        RedisStore()
    with pytest.raises(ValueError, match="give a URL"):
        RedisStore("redis://127.0.0.1:1/0", client=redis.Redis())
