"""What one Overview computation costs over many identities: wall time, and on Redis its commands, script
calls and Redis CPU; then the next poll within the interval (answered from admin/recent.py).

Each identity is admitted and settled once (one model, tokens, a cost); one ``GET
/v2/analytics/overview`` per range goes through the admin app (Starlette's test client), then the same
again. Redis figures come from ``INFO commandstats``/``INFO cpu`` of a private redis-server
(:mod:`.redis_stats`). Put the tree to measure first on ``PYTHONPATH``; on a shared machine the
Redis figures hold, the wall times move with the load.

    PYTHONPATH=src python -m bench.overview_cost --identities 10000 --store memory,redis
"""

from __future__ import annotations

import argparse
import time

from starlette.testclient import TestClient

from identity_middleware.admin import create_admin_app
from identity_middleware.core.admission import AdmissionRequest, Settlement, Usage
from identity_middleware.stores import MemoryStore, RedisStore, Store

from . import redis_stats
from .apps import private_redis, source_info

TOKEN = "bench"
RANGES = ("24h", "7d", "30d")


def _fill(store: Store, identities: int) -> float:
    started = time.perf_counter()
    for n in range(identities):
        admission = store.admit(AdmissionRequest(f"user_{n}"))
        assert admission.identity is not None
        usage = Usage()
        usage.add(1_000_000 + n, 100, 20, "openai/gpt-4o" if n % 2 else "anthropic/claude-sonnet-4-5")
        store.settle(Settlement(admission.identity.id, usage, admission.reservation))
    store.flush()
    return time.perf_counter() - started


def _measure(name: str, store: Store, identities: int, meter: redis_stats.Meter | None) -> None:
    print(f"{name}: {identities} identities filled in {_fill(store, identities):.1f} s")
    client = TestClient(create_admin_app(store, token=TOKEN))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for range_ in RANGES:
        before = meter.snapshot() if meter is not None else None
        started = time.perf_counter()
        body = client.get(f"/v2/analytics/overview?range={range_}", headers=auth).json()
        took = time.perf_counter() - started
        redis = ""
        if meter is not None and before is not None:
            usage = redis_stats.between(before, meter.snapshot(), 1)
            redis = (f"; Redis {usage.commands:,.0f} commands, {usage.scripts:,.0f} script calls, "
                     f"{usage.cpu_us / 1000:,.0f} ms CPU")
        started = time.perf_counter()
        client.get(f"/v2/analytics/overview?range={range_}", headers=auth)
        again = time.perf_counter() - started
        print(f"  {range_}: computed in {took:.2f} s{redis}; the next poll {again * 1000:.1f} ms "
              f"({body['totals']['identities']} identities, {body['totals']['requests']} requests)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--identities", type=int, default=10_000)
    parser.add_argument("--store", default="memory,redis", help="memory, redis or both, comma-separated")
    args = parser.parse_args(argv)
    kinds = {kind.strip() for kind in args.store.split(",")}
    print(source_info())
    if "memory" in kinds:
        _measure("memory", MemoryStore(), args.identities, None)
    if "redis" in kinds:
        with private_redis() as url:
            meter = redis_stats.Meter(url)
            store = RedisStore.from_url(url, prefix="overview")
            try:
                _measure("redis", store, args.identities, meter)
            finally:
                store.close()
                meter.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
