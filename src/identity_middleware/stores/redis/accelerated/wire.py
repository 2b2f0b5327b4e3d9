"""The sync socket transport: script calls of each thread over a plain socket to a plain standalone Redis.

The sync twin of :mod:`.mux`: a thread's script calls skip redis-py's pool, per-argument encoder
and response callbacks: the command is packed once (:mod:`.resp`), written with one ``sendall`` and
its reply parsed by hiredis; everything else goes through redis-py's transport. The redis-py rules
are kept: the socket timeout bounds every wait (a timed-out connection is closed, never reused: its
reply may still come), and a broken connection is retried once, at once, on a new one; a timeout
never. A NOSCRIPT reply has every script loaded and the command sent again, once. Connections are
per thread and per process (a forked child opens its own); ``close()`` closes them all.
"""

from __future__ import annotations

import os
import socket
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import hiredis
import redis.exceptions as errors

from ..steps import Batch, Step
from ..transport import RedisPy
from .resp import LOAD_SCRIPTS, SCRIPT_COUNT, Endpoint, direct_command, reply_error

__all__ = ["SyncDirect", "WireTransport"]


class _Connection:
    def __init__(self, end: Endpoint) -> None:
        self.pid = os.getpid()
        where: Any = end.path if end.path is not None else (end.host, end.port)
        try:
            if end.path is None:
                self.sock = socket.create_connection(where, timeout=end.connect_timeout)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            else:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(end.connect_timeout)
                self.sock.connect(where)
        except TimeoutError as error:
            raise errors.TimeoutError(f"Timeout connecting to {where}") from error
        except OSError as error:
            raise errors.ConnectionError(f"Error connecting to {where}: {error!r}") from error
        self.sock.settimeout(end.timeout)
        self.reader: Any = hiredis.Reader(encoding="utf-8", replyError=reply_error)  # its stub: no bytearray
        self.buffer = bytearray(65536)
        try:
            hello = end.hello()
            for reply in self.exchange(hello) if hello else ():
                if isinstance(reply, Exception):
                    raise reply
        except BaseException:
            self.close()
            raise

    def exchange(self, commands: Sequence[bytes]) -> list[Any]:
        """Send the commands in one write and read one reply each (an error reply in its place);
        those answered NOSCRIPT are sent again, once, after every script is loaded."""
        replies = self._exchange(commands)
        missing = [index for index, reply in enumerate(replies) if isinstance(reply, errors.NoScriptError)]
        if missing:
            again = self._exchange([LOAD_SCRIPTS, *(commands[index] for index in missing)], SCRIPT_COUNT - 1)
            for index, reply in zip(missing, again[SCRIPT_COUNT:], strict=True):
                replies[index] = reply
        return replies

    def _exchange(self, commands: Sequence[bytes], extra: int = 0) -> list[Any]:
        """``extra``: replies beyond one per command (a command that holds several)."""
        try:
            self.sock.sendall(b"".join(commands))
            replies: list[Any] = []
            while len(replies) < len(commands) + extra:
                reply = self.reader.gets()
                if reply is not False:
                    replies.append(reply)
                    continue
                read = self.sock.recv_into(self.buffer)
                if not read:
                    raise errors.ConnectionError("connection to redis closed by server")
                self.reader.feed(self.buffer, 0, read)
            return replies
        except TimeoutError as error:
            self.close()  # its reply may still come: never reused
            raise errors.TimeoutError("Timeout reading from redis") from error
        except OSError as error:
            self.close()
            raise errors.ConnectionError(f"connection to redis lost: {error!r}") from error
        except errors.ConnectionError:
            self.close()
            raise

    def close(self) -> None:
        self.sock.close()


class SyncDirect:
    """Per-thread plain connections to ``endpoint`` (the parameters of redis-py's pool for the same URL)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._local = threading.local()
        # Weak: a thread that ends drops its connection, which is then closed (a server that starts
        # a thread per request would otherwise keep every one of them open).
        self._open: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._lock = threading.Lock()

    def _connection(self) -> _Connection:
        connection: _Connection | None = getattr(self._local, "connection", None)
        if connection is None or connection.pid != os.getpid() or connection.sock.fileno() < 0:
            connection = self._local.connection = _Connection(self.endpoint)
            weakref.finalize(connection, connection.sock.close)
            with self._lock:
                self._open.add(connection)
        return connection

    def call_many(self, commands: Sequence[bytes]) -> list[Any]:
        """Each command's reply, or its error reply, in order; one immediate retry on a connection
        found broken (a server restart), never after a timeout."""
        try:
            return self._connection().exchange(commands)
        except errors.ConnectionError:
            return self._connection().exchange(commands)

    def call(self, command: bytes) -> Any:
        reply = self.call_many([command])[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    def drop(self) -> None:
        """Close this thread's connection (the next call connects again); other threads' are left
        to meet what this one met themselves."""
        connection: _Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            self._local.connection = None
            connection.close()

    def close(self) -> None:
        with self._lock:
            connections, self._open = list(self._open), weakref.WeakSet()
        pid = os.getpid()
        for connection in connections:
            if connection.pid == pid:
                connection.close()


class WireTransport:
    """The sync transport over :class:`SyncDirect`: script calls and ``HGETALL`` (a batch of them too)
    on the thread's socket, everything else through ``fallback``, redis-py's transport (whose
    client's pool gives the connection parameters)."""

    def __init__(self, fallback: RedisPy) -> None:
        self.fallback = fallback
        self.direct = SyncDirect(Endpoint.of(fallback.client.connection_pool))

    @property
    def client(self) -> Any:
        return self.fallback.client

    def execute(self, step: Step) -> Any:
        if not isinstance(step, Batch):
            packed = direct_command(step)
            if packed is not None:
                return self.direct.call(packed)
        else:
            commands = [direct_command(each) for each in step.steps]
            if None not in commands:
                replies = self.direct.call_many(commands)  # type: ignore[arg-type]
                for reply in replies:
                    if isinstance(reply, Exception):
                        raise reply  # as the reference transport raises a batch's first error reply
                return replies
        return self.fallback.execute(step)

    def follow_master(self) -> None:
        self.fallback.follow_master()  # never a Sentinel client: the socket path serves plain URLs

    def demoted(self) -> None:
        try:
            self.direct.drop()
        finally:
            self.fallback.demoted()

    def close(self) -> None:
        try:
            self.direct.close()
        finally:
            self.fallback.close()
