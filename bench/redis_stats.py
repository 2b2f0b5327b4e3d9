"""What Redis spent on a wrk run: ``INFO commandstats`` and ``INFO cpu`` read before and after it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Commands that run others: their usec include the commands they run, which commandstats also counts.
SCRIPTS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})
# The bench's own reads, not the app's.
IGNORED = frozenset({"info", "config|resetstat", "ping"})


@dataclass
class Snapshot:
    calls: Counter[str]
    usec: Counter[str]
    cpu_seconds: float  # used_cpu_user + used_cpu_sys: every redis-server thread since it started


@dataclass
class Usage:
    """Redis's work between two snapshots, and per request of the run it covers."""

    requests: int
    calls: Counter[str] = field(default_factory=Counter)
    usec: Counter[str] = field(default_factory=Counter)
    cpu_seconds: float = 0.0

    def per_request(self, value: float) -> float:
        return value / max(self.requests, 1)

    @property
    def commands(self) -> float:
        """Commands executed per request, the ones scripts run included."""
        return self.per_request(sum(self.calls.values()))

    @property
    def scripts(self) -> float:
        """EVAL/EVALSHA/FCALL per request."""
        return self.per_request(sum(n for name, n in self.calls.items() if name in SCRIPTS))

    @property
    def script_usec(self) -> float:
        return self.per_request(sum(n for name, n in self.usec.items() if name in SCRIPTS))

    @property
    def other_usec(self) -> float:
        """commandstats µs of the other commands: sent by clients or run inside scripts (then also in
        :attr:`script_usec`), commandstats cannot tell which."""
        return self.per_request(sum(n for name, n in self.usec.items() if name not in SCRIPTS))

    @property
    def cpu_us(self) -> float:
        """Redis CPU µs per request (``INFO cpu``): what bounds how many requests one Redis core serves."""
        return self.cpu_seconds / max(self.requests, 1) * 1e6

    def top(self, count: int = 6) -> str:
        """The commands run most per request, e.g. ``evalsha 1.00, hincrby 3.00``."""
        return ", ".join(f"{name} {self.per_request(n):.2f}" for name, n in self.calls.most_common(count))


class Meter:
    """Reads one redis-server's counters directly (not through a delay proxy) with redis-py."""

    def __init__(self, url: str) -> None:
        import redis

        self._client: Any = redis.Redis.from_url(url, socket_timeout=10)

    def snapshot(self) -> Snapshot:
        stats: dict[str, Any] = self._client.info("commandstats")
        cpu: dict[str, Any] = self._client.info("cpu")
        calls: Counter[str] = Counter()
        usec: Counter[str] = Counter()
        for key, value in stats.items():
            name = key.removeprefix("cmdstat_")
            if name not in IGNORED:
                calls[name] = int(value["calls"])
                usec[name] = int(value["usec"])
        return Snapshot(calls, usec, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]))

    def close(self) -> None:
        self._client.close()


def between(before: Snapshot, after: Snapshot, requests: int) -> Usage:
    calls = Counter(after.calls)
    calls.subtract(before.calls)
    usec = Counter(after.usec)
    usec.subtract(before.usec)
    return Usage(requests, +calls, +usec, after.cpu_seconds - before.cpu_seconds)


def total(usages: list[Usage]) -> Usage:
    """Several runs' usage as one (per-request figures weighted by each run's requests)."""
    summed = Usage(sum(u.requests for u in usages))
    for usage in usages:
        summed.calls.update(usage.calls)
        summed.usec.update(usage.usec)
        summed.cpu_seconds += usage.cpu_seconds
    return summed
