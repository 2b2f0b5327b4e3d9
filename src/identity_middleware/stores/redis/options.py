"""RedisStore's options: one frozen dataclass, validated when it is made, and the leasing option."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import tzinfo
from typing import Any

from ...core.periods import UTC
from ..base import DEFAULT_RESERVATION_TTL
from ..health import Health

# Seconds an admission may wait for Redis. Past it the request is refused (503) while Redis is not
# known to be down, and meets the outage policy once it is (..health): a process starved of CPU
# reads its replies late, and that must not let requests through unmetered.
REQUEST_TIMEOUT = 2.0
SETTLE_ID_TTL = 600  # seconds Redis remembers an applied settle call
LINGER = 0.05  # seconds a sync process holds settled usage before writing it (the default)


@dataclass(frozen=True, slots=True)
class Lease:
    """Zero-round-trip admission for :class:`~identity_middleware.stores.RedisStore` (``lease=``).

    ``fraction`` of the headroom no one holds (the least over the identity's budgets) is what one
    grant adds to this process's lease, so grants shrink as the budget nears its limit. ``ttl``
    (seconds) is how long a lease lives in Redis unless renewed: a process admits from it only
    while at least half of it remains (every request so admitted stays covered that long), and
    renews it, off the request path, in the settlement batch once a quarter has passed or when it
    runs below half of its last grant.
    """

    fraction: float = 0.1
    ttl: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"Lease fraction must be in (0, 1], not {self.fraction!r}")
        if not math.isfinite(self.ttl) or self.ttl < 0.01:
            raise ValueError(f"Lease ttl must be at least 0.01 s, not {self.ttl!r}")

    @property
    def ttl_ms(self) -> int:
        return int(self.ttl * 1000)


@dataclass(frozen=True, slots=True)
class Wait:
    """Writes acknowledged by replicas (``WAIT``) before they count as written, for
    :class:`~identity_middleware.stores.RedisStore` (``wait=``; standalone and Sentinel, not a Cluster).

    Each settlement batch is followed by ``WAIT replicas timeout`` in its own round trip; a batch
    fewer than ``replicas`` replicas acknowledged within ``timeout`` seconds stays buffered and is
    sent again (counted once: its charge markers), so a failover cannot lose usage the store let
    go of. ``admissions``: admissions wait too (their reservations and the identities they create
    survive a failover), at the cost of the replicas' acknowledgement on every request; one that
    falls short meets the outage policy.
    """

    replicas: int = 1
    timeout: float = 0.1
    admissions: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int) or self.replicas < 1:
            raise ValueError(f"Wait replicas must be a whole number >= 1, not {self.replicas!r}")
        if not math.isfinite(self.timeout) or self.timeout < 0.001:
            raise ValueError(f"Wait timeout must be at least 0.001 s, not {self.timeout!r}")

    @property
    def timeout_ms(self) -> int:
        return max(1, round(self.timeout * 1000))


@dataclass(frozen=True, kw_only=True)
class RedisOptions:
    """How a :class:`~identity_middleware.stores.RedisStore` stores and reaches Redis.

    ``prefix``: every key's prefix. ``request_timeout`` (2 s) bounds how long an admission (and a
    sync settlement's write) waits for Redis: past it the request is refused with 503 while Redis
    is not known to be down, and meets the middleware's ``on_store_error`` once it is; ``None``
    leaves only the socket timeouts. ``breaker``: makes the store's
    :class:`~identity_middleware.stores.health.Health`, which decides when Redis is down (a refused
    or reset connection at once; a run of timeouts over a second with nothing answered; then one
    probe at a time), e.g. ``lambda: Health(cooldown=5)``. ``pending_limit``: settlements a
    process may hold unwritten (through an outage) before the oldest are dropped, with an error log.
    ``settle_id_ttl``: how long Redis remembers an applied settlement batch, so that a retry within
    it is a no-op. ``global_budgets=False`` skips model, provider and workspace budgets on the
    request path (no registry reads: for apps with identity budgets only). ``lease=Lease()``:
    admissions with no round trip (see :class:`Lease`). ``wait=Wait()``: settlements (and, if asked,
    admissions) count as written only once a replica acknowledged them (see :class:`Wait`).
    ``linger``: seconds a sync process holds settled usage before writing it, so that each
    identity's requests meanwhile share one settle call (at most a quarter of a lease's ttl); its
    own admissions count it meanwhile, other processes see it that much later.
    ``writer_thread=False``: no writer thread; a sync settlement is written on the thread that
    settles it, in one round trip (after the response, before that worker serves its next request),
    and other processes see it at once.

    Connections (for a store built from a URL): ``max_connections`` caps each pool (per node on a
    Cluster); callers beyond it wait up to ``pool_timeout`` seconds. ``multiplex``: the
    accelerated transports (one multiplexed connection per event loop, a plain socket per thread;
    see :mod:`.transports`) where the URL allows them; off, everything goes through redis-py.
    ``client_options`` go to the redis-py clients as they are.

    ``clock``: the monotonic clock (seconds) the store's caches and leases run on (how long the
    registry of global budgets is trusted, when a lease expires); a test may pass one it moves.
    """

    prefix: str = "idm"
    tz: tzinfo = UTC
    reservation_ttl: float = DEFAULT_RESERVATION_TTL
    request_timeout: float | None = REQUEST_TIMEOUT
    pending_limit: int = 100_000
    settle_id_ttl: int = SETTLE_ID_TTL
    global_budgets: bool = True
    lease: Lease | None = None
    wait: Wait | None = None
    linger: float = LINGER
    writer_thread: bool = True
    breaker: Callable[[], Health] = Health
    max_connections: int = 64
    pool_timeout: float = 10.0
    socket_timeout: float = 5.0
    socket_connect_timeout: float = 2.0
    multiplex: bool = True
    client_options: Mapping[str, Any] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if not self.prefix or "{" in self.prefix or "}" in self.prefix:
            raise ValueError("the key prefix must be non-empty and contain no braces")
        if not math.isfinite(self.linger) or self.linger < 0:
            raise ValueError(f"linger must be a finite number of seconds >= 0, not {self.linger!r}")
        if self.request_timeout is not None and not self.request_timeout > 0:
            raise ValueError(f"request_timeout must be a number of seconds > 0 or None, not {self.request_timeout!r}")

    @classmethod
    def of(cls, **values: Any) -> RedisOptions:
        """Options from keyword arguments; those that are not options go to the redis-py clients
        (what :meth:`RedisStore.from_url` has always taken)."""
        names = {each.name for each in fields(cls)}
        extra = {name: value for name, value in values.items() if name not in names}
        chosen = {name: value for name, value in values.items() if name in names}
        if extra:
            chosen["client_options"] = {**chosen.get("client_options", {}), **extra}
        return cls(**chosen)
