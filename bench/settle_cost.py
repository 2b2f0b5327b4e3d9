"""What one settle script call costs Redis: commands (those the script runs included) and CPU per settlement.

Each settlement (one model, tokens, a cost) is settled and flushed on its own, so every one is one
settle script call and one round trip; ``--identities`` fewer than ``--settlements`` makes most calls
add to counters that exist (the steady state), as many makes every call create its keys (their
expiry set too). Read from ``INFO commandstats`` / ``INFO cpu`` of a private redis-server
(:mod:`.redis_stats`). ``--at REV`` of ``bench.run`` does not apply: put the tree to measure first on
``PYTHONPATH``, and alternate runs of the two trees on a shared machine.

    PYTHONPATH=src python -m bench.settle_cost --settlements 4000 --identities 100 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics

from identity_middleware.core.admission import AdmissionRequest, Settlement, Usage
from identity_middleware.stores import RedisStore

from . import redis_stats
from .apps import private_redis, source_info


def _round(url: str, meter: redis_stats.Meter, prefix: str, settlements: int, identities: int) -> redis_stats.Usage:
    store = RedisStore.from_url(url, prefix=prefix)
    try:
        ulids = [store.admit(AdmissionRequest(f"user_{n % identities}")).identity.id  # type: ignore[union-attr]
                 for n in range(settlements)]
        store.flush()
        before = meter.snapshot()
        for ulid in ulids:
            usage = Usage()
            usage.add(1_234_567, 120, 45, "openai/gpt-4o")
            store.settle(Settlement(ulid, usage, None))
            store.flush()
        return redis_stats.between(before, meter.snapshot(), settlements)
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settlements", type=int, default=4000)
    parser.add_argument("--identities", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print(source_info())
    cpu: list[float] = []
    with private_redis() as url:
        meter = redis_stats.Meter(url)
        try:
            for number in range(args.rounds):
                usage = _round(url, meter, f"settle{number}", args.settlements, args.identities)
                cpu.append(usage.cpu_us)
                print(f"round {number + 1}: {usage.commands:.2f} commands and {usage.scripts:.2f} scripts per "
                      f"settlement, Redis CPU {usage.cpu_us:.1f} µs; {usage.top(8)}")
        finally:
            meter.close()
    print(f"Redis CPU µs per settlement: median {statistics.median(cpu):.1f}, best {min(cpu):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
