"""One breaker per Cluster master, so that a master's outage is its identities', not the store's.

A standalone server or a Sentinel's master is one shard: the store has one breaker
(:mod:`..health`). On a Cluster each master serves the identities of its slots, and one master's
loss (a failover takes seconds) says nothing about the others. So an admission is judged by the
breaker of the master that serves its identity's slot, as the client's slot map names it (no round
trip): while one master fails, identities on the other masters are admitted as usual, and only
those it holds meet the outage policy. A call whose master is not known (the client not built yet,
a slot no master serves) is judged by the store's own breaker.

A master that was replaced (its replica promoted, the slots another node's now) is asked no more:
a breaker no call has asked for :data:`IDLE` seconds is forgotten, so the store is not taken for
partly down (:attr:`Shards.down`) because of a node that no longer serves anything.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import redis.exceptions

from ..health import Health
from .keys import identity_tag

__all__ = ["IDLE", "Shards", "node_of"]

IDLE = 10.0  # seconds after which a breaker no call has asked is forgotten


class Shards:
    """The store's breaker and, on a Cluster, one per master (by node name, ``host:port``)."""

    def __init__(self, make: Callable[[], Health], clock: Callable[[], float] = time.monotonic) -> None:
        self._make = make
        self._clock = clock
        self.store = make()  # the store's own: a server's, or a Cluster call's whose master is not known
        self._store_asked = float("-inf")
        self._nodes: dict[str, tuple[Health, list[float]]] = {}  # breaker, [when last asked]
        self._lock = threading.Lock()

    def of(self, node: str | None) -> Health:
        """The breaker that judges a call to ``node`` (``None``: the store's)."""
        now = self._clock()
        if node is None:
            self._store_asked = now
            return self.store
        found = self._nodes.get(node)
        if found is None:
            with self._lock:
                found = self._nodes.get(node)
                if found is None:
                    found = self._nodes[node] = (self._make(), [now])
        found[1][0] = now
        return found[0]

    @property
    def down(self) -> bool:
        """Whether a breaker asked within :data:`IDLE` seconds is open: the store, or part of it,
        is known to be down (forgotten breakers are dropped here)."""
        now = self._clock()
        if self.store.down and now - self._store_asked < IDLE:
            return True
        if not self._nodes:
            return False
        with self._lock:
            for node, (health, asked) in list(self._nodes.items()):
                if now - asked[0] >= IDLE:
                    del self._nodes[node]
                elif health.down:
                    return True
        return False


def node_of(client: Any, external_id: str) -> str | None:
    """The name (``host:port``) of the master that serves ``external_id``'s slot in the slot map of
    ``client``, a redis-py Cluster client, sync or async (no round trip); ``None`` when no master
    serves it now."""
    try:
        node = client.get_node_from_key(f"{{{identity_tag(external_id)}}}")
    except redis.exceptions.RedisClusterException:  # SlotNotCoveredError
        return None
    return None if node is None else str(node.name)
