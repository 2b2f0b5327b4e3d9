"""Settle, fail, restore, flush: the scenario every way of losing Redis's writes is put through.

Three requests are admitted while Redis serves; they settle while ``outage`` holds (a master short
of replicas, a slot no master serves, a WAIT no replica acknowledges); the flush meets the outage
and the settlements stay buffered; once the outage is over two flushes write them, and they are
counted once (the second flush has nothing left). The caller then reads what Redis holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest

from identity_middleware.core.admission import AdmissionRequest, Settlement, Usage
from identity_middleware.core.errors import StoreUnavailable
from identity_middleware.core.models import Budget, IdentityInput
from identity_middleware.core.money import to_nanos
from identity_middleware.stores import RedisStore

CENT = to_nanos("0.01")
REQUESTS = 3  # each settles a cent: what the caller then finds in Redis is REQUESTS cents


def settlements_outlast(store: RedisStore, external_id: str, outage: AbstractContextManager[object], *,
                        refusal: str | None = None, admissions_refused: bool = True,
                        during: Callable[[], None] | None = None) -> None:
    """The scenario on a sync store (``linger`` long: only the test's flushes write). ``refusal``:
    what the outage's error says; ``admissions_refused``: an admission meets the outage too (it
    writes a reservation); ``during``: more checks while the outage holds."""
    identity = store.create(IdentityInput(id=external_id)).id
    store.set_budget(external_id, Budget(period="daily", amount="1.00"))  # an admission reserves: a write
    admissions = [store.admit(AdmissionRequest(external_id, estimate=CENT)) for _ in range(REQUESTS)]
    with outage:
        for admission in admissions:
            store.settle(Settlement(identity, Usage(cost=CENT), admission.reservation))
        with pytest.raises(StoreUnavailable, match=refusal):
            store.flush()
        assert store.buffered == REQUESTS
        if admissions_refused:
            with pytest.raises(StoreUnavailable, match=refusal):
                store.admit(AdmissionRequest(external_id, estimate=CENT))
        if during is not None:
            during()
    store.flush()
    store.flush()
    assert store.buffered == 0


async def asettlements_outlast(store: RedisStore, external_id: str, outage: AbstractContextManager[object], *,
                               refusal: str | None = None, admissions_refused: bool = True) -> None:
    """:func:`settlements_outlast` on the async forms, the outage begun and ended off the loop."""
    identity = (await store.acreate(IdentityInput(id=external_id))).id
    await store.aset_budget(external_id, Budget(period="daily", amount="1.00"))
    admissions = [await store.aadmit(AdmissionRequest(external_id, estimate=CENT)) for _ in range(REQUESTS)]
    await asyncio.to_thread(outage.__enter__)
    try:
        for admission in admissions:
            await store.asettle(Settlement(identity, Usage(cost=CENT), admission.reservation))
        with pytest.raises(StoreUnavailable, match=refusal):
            await store.aflush()
        assert store.buffered == REQUESTS
        if admissions_refused:
            with pytest.raises(StoreUnavailable, match=refusal):
                await store.aadmit(AdmissionRequest(external_id, estimate=CENT))
    finally:
        await asyncio.to_thread(outage.__exit__, None, None, None)
    await store.aflush()
    await store.aflush()
    assert store.buffered == 0
