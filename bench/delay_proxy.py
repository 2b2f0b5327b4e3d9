"""A TCP proxy that delays every byte by a fixed time each way: Redis as if it were a network hop away.

    python -m bench.delay_proxy --port 7001 --target 127.0.0.1:6379 --delay-ms 1

Each direction of each connection keeps its chunks in arrival order and writes each one ``delay``
seconds after it arrived, so a request/reply round trip gains 2 × delay and pipelined traffic keeps
flowing (a delay, not a bandwidth limit). It runs in a process of its own, so its CPU is not the app's.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
from typing import cast

from . import aio


class _Delayed(asyncio.Protocol):
    """One side of a proxied connection: what it receives goes to ``peer`` ``delay`` seconds later."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.peer: _Delayed | None = None
        self.transport: asyncio.Transport | None = None
        self._queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._early: list[bytes] = []  # received before the peer connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        self._queue.append((loop.time() + self.delay, data))
        if self._timer is None:
            self._timer = loop.call_at(self._queue[0][0], self._flush)

    def _flush(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._queue and self._queue[0][0] <= now:
            _, data = self._queue.popleft()
            self._deliver(data)
        if self._queue:
            self._timer = loop.call_at(self._queue[0][0], self._flush)
        elif self._closing:
            self._close_peer()

    def _deliver(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self._early.append(data)

    def peer_ready(self) -> None:
        assert self.peer is not None and self.peer.transport is not None
        for data in self._early:
            self.peer.transport.write(data)
        self._early.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True  # what is still queued is delivered first, then the peer is closed
        if not self._queue:
            self._close_peer()

    def _close_peer(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def serve(port: int, host: str, target_port: int, delay: float) -> asyncio.Server:
    loop = asyncio.get_running_loop()

    def accepted() -> _Delayed:
        client = _Delayed(delay)

        async def connect() -> None:
            try:
                _, upstream = await loop.create_connection(lambda: _Delayed(delay), host, target_port)
            except OSError:
                if client.transport is not None:
                    client.transport.close()
                return
            client.peer, upstream.peer = upstream, client
            client.peer_ready()

        tasks.add(task := loop.create_task(connect()))
        task.add_done_callback(tasks.discard)
        return client

    tasks: set[asyncio.Task[None]] = set()
    return await loop.create_server(accepted, "127.0.0.1", port, backlog=1024)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True, help="where to listen on 127.0.0.1")
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--delay-ms", type=float, required=True, help="added to each direction")
    args = parser.parse_args(argv)
    host, _, target_port = args.target.rpartition(":")
    aio.serve_until_stopped(lambda: serve(args.port, host, int(target_port), args.delay_ms / 1000))


if __name__ == "__main__":
    main()
