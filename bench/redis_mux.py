"""What the multiplexed async Redis path gains over plain redis-py pipelining, measured in one run.

Runs the store's in-process async request path (``aadmit`` with an estimate, then ``asettle`` of
its usage and reservation) against a private ``redis-server`` on a free port, with the multiplexed
connection on and off, in alternating rounds (each round a fresh store and event loop), and
prints µs per request each way and the ratio::

    .venv/bin/python -m bench.redis_mux                       # 6 rounds x 4,000 requests, 32 at once
    .venv/bin/python -m bench.redis_mux --concurrency 1 --loop uvloop
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import statistics
import time
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

from identity_middleware import Budget, IdentityExists, IdentityInput, Period
from identity_middleware.core.admission import AdmissionRequest, Settlement, Usage
from identity_middleware.stores import RedisStore

from .apps import private_redis, source_info

IDENTITIES = tuple(f"mux_{n}" for n in range(64))
ESTIMATE = 150_000  # nano-USD reserved per request, settled to COST
COST = 120_000


def _store(url: str, multiplex: bool) -> RedisStore:
    """A store with the multiplexed path on or off (the code before the off switch is measured by
    turning its eligibility check off, so ``--at``-style comparisons with old revisions still run)."""
    import identity_middleware.stores as stores

    if "multiplex" in inspect.signature(RedisStore.from_url).parameters or hasattr(stores, "RedisOptions"):
        return RedisStore.from_url(url, prefix="idm-mux-bench", multiplex=multiplex)
    from identity_middleware.stores.redis import mux  # type: ignore[attr-defined]

    if not multiplex:
        mux.Direct.usable = staticmethod(lambda pool: False)
    elif "usable" in vars(mux.Direct) and not hasattr(mux.Direct, "_original_usable"):
        mux.Direct._original_usable = mux.Direct.usable
    if multiplex and hasattr(mux.Direct, "_original_usable"):
        mux.Direct.usable = mux.Direct._original_usable
    return RedisStore.from_url(url, prefix="idm-mux-bench")


async def _request(store: RedisStore, external_id: str) -> None:
    admission = await store.aadmit(AdmissionRequest(external_id, estimate=ESTIMATE))
    assert admission.identity is not None and admission.allowed, admission
    await store.asettle(Settlement(admission.identity.id, Usage(cost=COST, input_tokens=10, output_tokens=5),
                                   admission.reservation))


async def _round(url: str, multiplex: bool, requests: int, concurrency: int) -> float:
    """µs per request of one round: ``concurrency`` workers share ``requests`` requests."""
    store = _store(url, multiplex)
    try:
        for index in range(len(IDENTITIES)):  # warm up: records and keys cached, scripts loaded
            await _request(store, IDENTITIES[index])
        await store.aflush()
        remaining = requests

        async def worker(number: int) -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await _request(store, IDENTITIES[(number + remaining) % len(IDENTITIES)])

        started = time.perf_counter()
        await asyncio.gather(*(worker(number) for number in range(concurrency)))
        await store.aflush()
        return (time.perf_counter() - started) * 1e6 / requests
    finally:
        await store.aclose()


def _runner(loop: str) -> Callable[[Coroutine[Any, Any, float]], float]:
    if loop == "uvloop":
        import uvloop

        return uvloop.run  # type: ignore[no-any-return]
    return asyncio.run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=6, help="rounds each way, alternating (default 6)")
    parser.add_argument("--requests", type=int, default=4000, help="requests per round (default 4000)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--redis-url", help="use this server instead of a private one (keys under idm-mux-bench)")
    args = parser.parse_args()
    print(source_info())
    print(f"{args.rounds} rounds each way x {args.requests} requests, {args.concurrency} in flight, {args.loop}")
    run = _runner(args.loop)
    with private_redis() if args.redis_url is None else contextlib.nullcontext(args.redis_url) as url:
        setup = RedisStore.from_url(url, prefix="idm-mux-bench")
        for identity in IDENTITIES:
            with contextlib.suppress(IdentityExists):
                setup.create(IdentityInput(id=identity))
            setup.set_budget(identity, Budget(period=Period.DAILY, amount=Decimal("1000000")))
        setup.close()
        figures: dict[bool, list[float]] = {True: [], False: []}
        for number in range(args.rounds):
            for multiplex in (True, False) if number % 2 == 0 else (False, True):
                figures[multiplex].append(run(_round(url, multiplex, args.requests, args.concurrency)))
            print(f"round {number + 1}: multiplexed {figures[True][-1]:7.1f} µs/request, "
                  f"redis-py {figures[False][-1]:7.1f} µs/request")
    on, off = statistics.median(figures[True]), statistics.median(figures[False])
    print(f"median: multiplexed {on:.1f} µs/request, redis-py pipelining {off:.1f} µs/request, "
          f"redis-py / multiplexed = {off / on:.2f}x (multiplexing saves {100 * (off - on) / off:.0f}%)")


if __name__ == "__main__":
    main()
