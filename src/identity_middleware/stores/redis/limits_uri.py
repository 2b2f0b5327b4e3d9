"""The store's server as a ``limits`` storage URI, so rate limits live beside the budgets.

``limits`` knows ``redis://``, ``rediss://``, ``redis+unix://``, ``redis+sentinel://`` and
``redis+cluster://``; it does not know redis-py's ``unix://``. A store built from clients has no
URL, so one is derived from the client's public connection parameters (what a URL can say: host,
port or socket path, db, user, password, TLS; not certificate options).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import redis
import redis.cluster
import redis.sentinel


def from_url(url: str) -> str:
    """``unix://`` (redis-py's name for a socket) as ``redis+unix://``; every other URL as it is."""
    return "redis+unix" + url[len("unix"):] if url.startswith("unix://") else url


def from_client(client: Any) -> str:
    """A URI for the server a redis-py sync client talks to (standalone, socket, TLS, Sentinel, Cluster)."""
    if isinstance(client, redis.cluster.RedisCluster):
        cluster: Any = client  # its node accessors are untyped
        node = cluster.get_default_node()
        return _uri("redis+cluster", cluster.get_connection_kwargs(), _address(node.host, node.port))
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    if isinstance(pool, redis.sentinel.SentinelConnectionPool):
        sentinels = ",".join(_address(each.connection_pool.connection_kwargs.get("host", "localhost"),
                                      each.connection_pool.connection_kwargs.get("port", 26379))
                             for each in pool.sentinel_manager.sentinels)
        return _uri("redis+sentinel", kwargs, sentinels, f"/{pool.service_name}")  # limits takes no db here
    if issubclass(pool.connection_class, redis.UnixDomainSocketConnection):
        query = urlencode({"db": kwargs.get("db", 0) or 0})
        return _uri("redis+unix", kwargs, "", f"{kwargs['path']}?{query}")
    scheme = "rediss" if issubclass(pool.connection_class, redis.SSLConnection) else "redis"
    address = _address(kwargs.get("host", "localhost"), kwargs.get("port", 6379))
    return _uri(scheme, kwargs, address, f"/{kwargs.get('db', 0) or 0}")


def _address(host: str, port: int | str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _uri(scheme: str, kwargs: dict[str, Any], address: str, rest: str = "") -> str:
    username, password = kwargs.get("username"), kwargs.get("password")
    auth = ""
    if password is not None:
        auth = f"{quote(username or '', safe='')}:{quote(password, safe='')}@"
    elif username is not None:
        auth = f"{quote(username, safe='')}@"
    return f"{scheme}://{auth}{address}{rest}"
