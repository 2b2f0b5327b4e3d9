"""The Overview's replies kept for a poll interval (admin/recent.py): one computation per window, however
many ask; a longer computation keeps its reply longer; callers arriving meanwhile share it; a failure is
not kept. On the test's clock."""

from __future__ import annotations

import asyncio

import pytest

from identity_middleware.admin.errors import Reply
from identity_middleware.admin.recent import FRESH, RecentReplies
from identity_middleware.stores import MemoryStore


class Seconds:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_reply_is_served_again_for_the_poll_interval_then_computed_anew() -> None:
    clock, store, computed = Seconds(), MemoryStore(), list[float]()
    recent = RecentReplies(clock)

    async def compute() -> Reply:
        computed.append(clock.now)
        return Reply(200, f"{len(computed)}".encode())

    async def main() -> list[bytes]:
        replies = [(await recent.get(store, "7d", compute)).content]
        clock.now += FRESH - 0.01
        replies.append((await recent.get(store, "7d", compute)).content)
        replies.append((await recent.get(store, "24h", compute)).content)  # another range: its own
        replies.append((await recent.get(MemoryStore(), "7d", compute)).content)  # another store: its own
        clock.now += 0.01
        replies.append((await recent.get(store, "7d", compute)).content)
        return replies

    assert asyncio.run(main()) == [b"1", b"1", b"2", b"3", b"4"]


def test_a_slow_computation_is_kept_for_twice_its_time() -> None:
    clock, store, computed = Seconds(), MemoryStore(), list[float]()
    recent = RecentReplies(clock)

    async def compute() -> Reply:
        computed.append(clock.now)
        clock.now += 4.0  # 4 s to compute: kept 8 s, not 5
        return Reply(200, b"x")

    async def main() -> None:
        await recent.get(store, "30d", compute)
        clock.now += 7.9
        await recent.get(store, "30d", compute)
        assert len(computed) == 1
        clock.now += 0.1
        await recent.get(store, "30d", compute)
        assert len(computed) == 2

    asyncio.run(main())


def test_callers_arriving_during_a_computation_share_it_and_a_failure_is_not_kept() -> None:
    clock, store = Seconds(), MemoryStore()
    recent = RecentReplies(clock)
    started = 0

    async def main() -> None:
        gate = asyncio.Event()

        async def slow() -> Reply:
            nonlocal started
            started += 1
            await gate.wait()
            return Reply(200, b"shared")

        waiting = [asyncio.create_task(recent.get(store, "7d", slow)) for _ in range(5)]
        await asyncio.sleep(0)
        gate.set()
        assert [reply.content for reply in await asyncio.gather(*waiting)] == [b"shared"] * 5
        assert started == 1

        async def failing() -> Reply:
            raise ConnectionError("store down")

        clock.now += FRESH
        with pytest.raises(ConnectionError):
            await recent.get(store, "7d", failing)
        assert (await recent.get(store, "7d", slow)).content == b"shared" and started == 2

    asyncio.run(main())

