"""Redis clients from a URL: standalone, TLS, Sentinel or Cluster; sync, and async per event loop."""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import importlib.util
import inspect
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from ...core.errors import StoreMisconfigured
from .masters import connection_class
from .options import RedisOptions
from .transport import RedisPy, SyncTransport

SyncClient = redis.Redis | redis.cluster.RedisCluster
AsyncClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster


def _retry() -> Retry:
    # One immediate retry on a broken connection (a server restart leaves stale pooled sockets), but
    # never on a timeout: the server may have run the script, and a second INCRBY would double count.
    return Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))


def _aretry() -> redis.asyncio.retry.Retry:
    """:func:`_retry` for an asyncio client (redis-py 8 warns when given the sync class)."""
    return redis.asyncio.retry.Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))


def check_client_options(url: str, given: Mapping[str, Any]) -> None:
    """Refuse a keyword that is neither a :class:`RedisOptions` field nor a parameter of the redis-py
    client the URL makes (``redis.Redis``, or ``redis.cluster.RedisCluster`` for ``redis+cluster://``),
    naming what was probably meant."""
    if not given:
        return
    accepted = set(inspect.signature(redis.Redis.__init__).parameters)
    if urlsplit(url).scheme.endswith("+cluster"):
        accepted |= set(inspect.signature(redis.cluster.RedisCluster.__init__).parameters)
    accepted -= {"self", "kwargs"}
    unknown = sorted(name for name in given if name not in accepted)
    if not unknown:
        return
    ours = [each.name for each in dataclasses.fields(RedisOptions)]
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, [*ours, *sorted(accepted)], n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise StoreMisconfigured(f"unknown Redis option {', '.join(hints)}: RedisStore.from_url(url, options, **fields) "
                             f"takes RedisOptions' fields ({', '.join(ours)}) and the redis-py client's keyword "
                             "arguments")


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """How to build this store's clients; the async one is built once per event loop."""

    url: str
    max_connections: int = 64
    pool_timeout: float = 10.0
    socket_timeout: float = 5.0
    socket_connect_timeout: float = 2.0
    options: tuple[tuple[str, Any], ...] = ()
    multiplex: bool = True
    clock: Callable[[], float] = time.monotonic  # how often a transport asks Sentinel where the master is

    @classmethod
    def of(cls, url: str, options: RedisOptions) -> ClientSpec:
        """The spec of ``url`` under ``options``; a client option redis-py does not take is refused
        here, at construction (redis-py would refuse it only when it opens its first connection,
        inside a request)."""
        check_client_options(url, options.client_options)
        return cls(url, options.max_connections, options.pool_timeout, options.socket_timeout,
                   options.socket_connect_timeout, tuple(options.client_options.items()), options.multiplex,
                   options.clock)

    def bounded(self, timeout: float) -> ClientSpec:
        """This spec with every wait (connect, reply, a pooled connection) bounded by ``timeout``."""
        return dataclasses.replace(
            self, socket_timeout=min(self.socket_timeout, timeout), pool_timeout=min(self.pool_timeout, timeout),
            socket_connect_timeout=min(self.socket_connect_timeout, timeout))

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def is_cluster(self) -> bool:
        return self.scheme.endswith("+cluster")

    @property
    def is_sentinel(self) -> bool:
        return self.scheme.endswith("+sentinel")

    @property
    def multiplexed(self) -> bool:
        """Whether the accelerated transports (:mod:`.accelerated`) serve this store: they speak plain
        RESP over TCP or a unix socket with AUTH and SELECT and parse with hiredis, so only a URL that
        asks for nothing more (no TLS, Sentinel, Cluster, client options, or URL options beyond the
        db and password), with hiredis installed, qualifies."""
        query = set(parse_qs(urlsplit(self.url).query))
        return (self.multiplex and self.scheme in ("redis", "unix") and not self.options
                and query <= {"db", "password"} and importlib.util.find_spec("hiredis") is not None)

    def _plain_url(self) -> str:
        """The URL redis-py understands: ``redis+cluster://`` -> ``redis://``; ``unix://`` as it is."""
        scheme = self.scheme
        if scheme == "unix":
            return self.url
        base = "rediss" if scheme.startswith("rediss") else "redis"
        return base + self.url[len(scheme):]

    def _kwargs(self) -> dict[str, Any]:
        return {"decode_responses": True, "socket_timeout": self.socket_timeout,
                "socket_connect_timeout": self.socket_connect_timeout, **dict(self.options)}

    def _sentinel(self) -> tuple[list[tuple[str, int]], str, dict[str, Any]]:
        parts = urlsplit(self._plain_url())
        hosts = []
        for host in parts.netloc.rpartition("@")[2].split(","):
            name, _, port = host.rpartition(":")
            hosts.append((name or host, int(port) if port.isdigit() else 26379))
        path = [part for part in parts.path.split("/") if part]
        if not path:
            raise ValueError("redis+sentinel:// URLs name the service: redis+sentinel://host:26379/mymaster")
        extra: dict[str, Any] = {}
        if parts.password:
            extra["password"] = unquote(parts.password)
        if parts.username:
            extra["username"] = unquote(parts.username)
        if len(path) > 1:
            extra["db"] = int(path[1])
        return hosts, path[0], extra

    def sync_client(self) -> SyncClient:
        kwargs = self._kwargs()
        if self.is_cluster:
            return redis.cluster.RedisCluster.from_url(
                self._plain_url(), retry=_retry(), connection_pool_class=redis.BlockingConnectionPool,
                max_connections=self.max_connections, timeout=self.pool_timeout, **kwargs)
        if self.is_sentinel:
            hosts, service, extra = self._sentinel()
            sentinel = cast(Any, redis.sentinel.Sentinel)(
                hosts, socket_timeout=self.socket_timeout, sentinel_kwargs={"password": extra.get("password")})
            kwargs.setdefault("connection_class", connection_class(kwargs, asynchronous=False))
            return cast(Any, sentinel).master_for(service, retry=_retry(), **kwargs, **extra)  # type: ignore[no-any-return]
        pool = redis.BlockingConnectionPool.from_url(
            self._plain_url(), max_connections=self.max_connections, timeout=self.pool_timeout,
            retry=_retry(), **kwargs)
        return redis.Redis.from_pool(pool)  # owns the pool: close() disconnects it

    def sync_transport(self) -> SyncTransport:
        """The sync transport: redis-py's, or the socket path (:mod:`.accelerated.wire`) where it serves."""
        client = self.sync_client()
        transport = RedisPy(client, self.clock)
        if self.multiplexed and isinstance(client, redis.Redis):
            from .accelerated.wire import WireTransport  # loaded only when on

            return WireTransport(transport)
        return transport

    def async_client(self) -> AsyncClient:
        """A client bound to the running event loop (redis.asyncio pools cannot cross loops)."""
        kwargs = self._kwargs()
        if self.is_cluster:
            # The async cluster raises MaxConnectionsError when a node's pool is full; the store
            # queues on a per-loop semaphore of the same size instead (see RedisStore). One retry,
            # as the sync client's: redis-py's default (10, with a backoff of up to 10 s) held a
            # call to a master that was gone for seconds, past every request's bound.
            return redis.asyncio.cluster.RedisCluster.from_url(
                self._plain_url(), max_connections=self.max_connections, retry=_aretry(), **kwargs)
        if self.is_sentinel:
            hosts, service, extra = self._sentinel()
            sentinel = cast(Any, redis.asyncio.sentinel.Sentinel)(
                hosts, socket_timeout=self.socket_timeout, sentinel_kwargs={"password": extra.get("password")})
            kwargs.setdefault("connection_class", connection_class(kwargs, asynchronous=True))
            return cast(Any, sentinel).master_for(service, retry=_aretry(), **kwargs, **extra)  # type: ignore[no-any-return]
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            self._plain_url(), max_connections=self.max_connections, timeout=self.pool_timeout,
            retry=_aretry(), **kwargs)
        return redis.asyncio.Redis.from_pool(pool)

    def limiter(self) -> asyncio.Semaphore | None:
        return asyncio.Semaphore(self.max_connections) if self.is_cluster else None
