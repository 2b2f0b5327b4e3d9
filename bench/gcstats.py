"""The garbage collector's share of a served app: collections per generation and the time they paused it.

A uvicorn server started with ``IDM_BENCH_GC_FILE`` set counts every collection (``gc.callbacks``)
and writes its totals to that file on ``SIGUSR1``; run.py reads them before and after each round.
Full (generation 2) collections walk every object the process holds, tens of milliseconds for an
app's heap, and a request that waits for Redis holds its objects through young collections, which
promotes them and so brings the next full collection nearer: this is what the Redis path's p99 is
made of (see bench/README.md, "Garbage collection").
"""

from __future__ import annotations

import gc
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV = "IDM_BENCH_GC_FILE"
READ_TIMEOUT = 2.0  # seconds to wait for the server's answer to SIGUSR1


class _Counter:
    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.ms = [0.0, 0.0, 0.0]
        self.seq = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = info["generation"]
            self.collections[generation] += 1
            self.ms[generation] += (time.perf_counter() - self._started) * 1e3

    def write(self, path: Path) -> None:
        self.seq += 1
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps({"seq": self.seq, "collections": self.collections, "ms": self.ms}))
        partial.replace(path)


def serve(path: str) -> None:
    """In the server: count collections from now on; on SIGUSR1 write the totals to ``path``."""
    counter = _Counter()
    gc.callbacks.append(counter)
    signal.signal(signal.SIGUSR1, lambda signum, frame: counter.write(Path(path)))


@dataclass(frozen=True)
class Snapshot:
    seq: int
    collections: tuple[int, int, int]
    ms: tuple[float, float, float]


def read(pid: int, path: Path, last: Snapshot | None = None) -> Snapshot | None:
    """Ask server ``pid`` for its totals; ``None`` if it does not answer (an app that does not count)."""
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        return None
    deadline = time.monotonic() + READ_TIMEOUT
    while time.monotonic() < deadline:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = None
        if data is not None and (last is None or data["seq"] > last.seq):
            c, m = data["collections"], data["ms"]
            return Snapshot(data["seq"], (c[0], c[1], c[2]), (m[0], m[1], m[2]))
        time.sleep(0.01)
    return None


@dataclass(frozen=True)
class Usage:
    """The collector's work over one round."""

    requests: int
    full: int  # generation-2 collections
    young: int  # generation 0 and 1
    ms: float  # time paused in all collections

    @property
    def full_per_100k(self) -> float:
        return self.full / max(self.requests, 1) * 1e5

    @property
    def ms_per_1k(self) -> float:
        return self.ms / max(self.requests, 1) * 1e3


def between(before: Snapshot, after: Snapshot, requests: int) -> Usage:
    collections = [b - a for a, b in zip(before.collections, after.collections, strict=True)]
    return Usage(requests, collections[2], collections[0] + collections[1], sum(after.ms) - sum(before.ms))


def total(usages: list[Usage]) -> Usage:
    return Usage(sum(u.requests for u in usages), sum(u.full for u in usages), sum(u.young for u in usages),
                 sum(u.ms for u in usages))
