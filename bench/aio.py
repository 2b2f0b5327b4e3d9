"""The bench's helper servers' main loop: uvloop when installed (they should cost little CPU), until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import signal
from collections.abc import Awaitable, Callable


async def _serve(start: Callable[[], Awaitable[asyncio.Server]]) -> None:
    server = await start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def serve_until_stopped(start: Callable[[], Awaitable[asyncio.Server]]) -> None:
    """Run the server ``start()`` returns until SIGTERM or SIGINT."""
    with contextlib.suppress(KeyboardInterrupt):
        if importlib.util.find_spec("uvloop"):
            import uvloop

            uvloop.run(_serve(start))
        else:
            asyncio.run(_serve(start))
