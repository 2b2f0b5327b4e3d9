"""Connections of a Sentinel master pool that send only to the master their pool last learned of.

redis-py's Sentinel connections ask Sentinel where the master is in ``connect()``, which its pool
calls as it hands a connection out. A connection dropped while in use (by
:meth:`.transport.AsyncRedisPy.afollow_master` when the master moved, or by a broken socket) is
connected again by ``send_packed_command`` and the retries around it, which skip ``connect()`` and
reopen the address the connection had: the old master, which takes writes until Sentinel demotes it
and then discards them. Nor does the async pool drop a connection to an old address when it is
released (the sync one does, but not one still in use). So an admission waiting on the old master
when the store asked Sentinel was sent again to it, and its connection, back in the pool, carried
the later settlement batches there.

These connections check before each send that they are connected to the master their pool last
learned of (``get_master_address``: a transport's check, or any connection's connect); one connected
elsewhere is dropped and connected again through Sentinel. Once the store has asked Sentinel, nothing
more is sent to a master it no longer names (a command sent before is not called back).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio.connection
import redis.asyncio.sentinel
import redis.connection
import redis.sentinel


def elsewhere(connection: Any) -> bool:
    """Whether ``connection`` is open to an address other than the master its pool last learned of."""
    master = connection.connection_pool.master_address
    return master is not None and connection.is_connected and (connection.host, connection.port) != master


class MasterConnection(redis.sentinel.SentinelManagedConnection):
    """A sync master pool's connection (see the module)."""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if elsewhere(self):
            self.disconnect()  # type: ignore[no-untyped-call]
        if not self.is_connected:
            self.connect()  # type: ignore[no-untyped-call]  # through Sentinel (redis-py's send reopens the address it had)
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


class MasterSSLConnection(MasterConnection, redis.connection.SSLConnection):
    """:class:`MasterConnection` over TLS (as redis-py's ``SentinelManagedSSLConnection``)."""


class AsyncMasterConnection(redis.asyncio.sentinel.SentinelManagedConnection):
    """An async master pool's connection (see the module)."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if elsewhere(self):
            await self.disconnect()
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call]  # through Sentinel (redis-py's send reopens the address it had)
        await super().send_packed_command(command, check_health)


class AsyncMasterSSLConnection(AsyncMasterConnection, redis.asyncio.connection.SSLConnection):
    """:class:`AsyncMasterConnection` over TLS."""


def connection_class(kwargs: dict[str, Any], *, asynchronous: bool) -> type:
    """The class of a master pool's connections made with the client's ``kwargs`` (TLS with ``ssl``)."""
    if asynchronous:
        return AsyncMasterSSLConnection if kwargs.get("ssl") else AsyncMasterConnection
    return MasterSSLConnection if kwargs.get("ssl") else MasterConnection
