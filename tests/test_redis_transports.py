"""The transport seam: redis-py's public API as the reference, the accelerated transports beside it,
each one loaded only when it is on; every transport reloads scripts Redis forgot."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.exceptions

from identity_middleware.stores.redis.scripts import STATE
from identity_middleware.stores.redis.steps import Batch, Call, Eval, Step
from identity_middleware.stores.redis.transport import AsyncRedisPy, RedisPy

SRC = Path(__file__).resolve().parents[1] / "src"
ACCELERATED = "identity_middleware.stores.redis.accelerated"
LEASING = ("identity_middleware.stores.redis.lease", "identity_middleware.stores.redis.plans.lease")
WRITER_THREAD = "identity_middleware.stores.redis.background"

_PROGRAM = """
import asyncio, json, sys
from identity_middleware.core.admission import AdmissionRequest, Settlement, Usage
from identity_middleware.stores import Lease, RedisStore

url, multiplex, leased, sync = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1", sys.argv[4] == "1"
threaded = sys.argv[5] == "1"
store = RedisStore.from_url(url, prefix="modules", multiplex=multiplex, lease=Lease() if leased else None,
                            writer_thread=threaded)

async def main():
    admission = await store.aadmit(AdmissionRequest("a"))
    await store.asettle(Settlement(admission.identity.id, Usage(cost=1), admission.reservation))
    await store.aadmit(AdmissionRequest("a"))
    await store.aclose()

if sync:
    admission = store.admit(AdmissionRequest("a"))
    store.settle(Settlement(admission.identity.id, Usage(cost=1), admission.reservation))
    store.flush()
asyncio.run(main())
store.close()
print(json.dumps(sorted(name for name in sys.modules if name.startswith("identity_middleware.stores.redis"))))
"""


def loaded_modules(url: str, *, multiplex: bool, leased: bool = False, sync: bool = True,
                   writer_thread: bool = True) -> set[str]:
    """Our modules a fresh process has loaded after admissions and settlements on both paths."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", _PROGRAM, url, str(int(multiplex)), str(int(leased)),
                           str(int(sync)), str(int(writer_thread))],
                          capture_output=True, text=True, env=env, timeout=60, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_the_accelerators_and_leasing_are_absent_from_sys_modules_when_off(redis_url: str) -> None:
    modules = loaded_modules(redis_url, multiplex=False)
    assert not {name for name in modules if name.startswith(ACCELERATED)}
    assert not modules & set(LEASING)


def test_the_accelerators_and_leasing_are_loaded_when_on(redis_url: str) -> None:
    modules = loaded_modules(redis_url, multiplex=True, leased=True)
    assert {f"{ACCELERATED}.mux", f"{ACCELERATED}.wire", *LEASING} <= modules


def test_an_async_only_store_starts_no_writer_thread_module(redis_url: str) -> None:
    assert WRITER_THREAD not in loaded_modules(redis_url, multiplex=False, sync=False)
    assert WRITER_THREAD in loaded_modules(redis_url, multiplex=False, sync=True)


def test_without_the_writer_thread_its_module_is_absent(redis_url: str) -> None:
    assert WRITER_THREAD not in loaded_modules(redis_url, multiplex=True, sync=True, writer_thread=False)


# -- every transport over a real server -------------------------------------------------------------
def _sync_transports(url: str) -> dict[str, Callable[[], Any]]:
    from identity_middleware.stores.redis.accelerated.wire import WireTransport

    def plain() -> Any:
        return RedisPy(redis.Redis.from_url(url, decode_responses=True))

    return {"redis-py": plain, "wire": lambda: WireTransport(plain())}


def _async_transports(url: str) -> dict[str, Callable[[], Any]]:
    from identity_middleware.stores.redis.accelerated.mux import MuxTransport

    def plain() -> Any:
        return AsyncRedisPy(redis.asyncio.Redis.from_url(url, decode_responses=True))

    return {"redis-py": plain, "mux": lambda: MuxTransport(plain())}


def _state(key: str) -> Eval:
    """A call of the state script on keys nothing else uses (its reply: the budget rows, none)."""
    return Eval(STATE, [f"transport:{{{key}}}:{n}" for n in range(18)], [0])


def _steps(name: str) -> tuple[Step, Batch, Batch]:
    one = _state(name)
    batch = Batch([_state(name), Call("hgetall", (f"transport:{name}:missing",))])
    wrong = Batch([Call("hgetall", (f"transport:{name}:string",)), _state(name)])
    return one, batch, wrong


@pytest.mark.parametrize("kind", ["redis-py", "wire"])
def test_a_sync_transport_reloads_forgotten_scripts_and_raises_a_batchs_error_reply(redis_url: str, kind: str) -> None:
    transport = _sync_transports(redis_url)[kind]()
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    one, batch, wrong = _steps(f"sync-{kind}")
    admin.set(f"transport:sync-{kind}:string", "x")
    try:
        for _ in range(2):
            admin.script_flush()
            assert transport.execute(one) == []
            admin.script_flush()
            assert transport.execute(batch) in ([[], {}], [[], []])  # a hash as a map or a flat list
        with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
            transport.execute(wrong)
    finally:
        transport.close()
        admin.close()


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["redis-py", "mux"])
async def test_an_async_transport_reloads_forgotten_scripts_and_raises_a_batchs_error_reply(
        redis_url: str, kind: str) -> None:
    transport = _async_transports(redis_url)[kind]()
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    one, batch, wrong = _steps(f"async-{kind}")
    admin.set(f"transport:async-{kind}:string", "x")
    try:
        for _ in range(2):
            admin.script_flush()
            assert await transport.aexecute(one, None) == []
            admin.script_flush()
            assert await transport.aexecute(batch, None) in ([[], {}], [[], []])  # a hash as a map or a flat list
        with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
            await transport.aexecute(wrong, None)
        late = asyncio.get_running_loop().time() - 1
        with pytest.raises(redis.exceptions.TimeoutError):
            await transport.aexecute(one, late)  # a deadline already passed
    finally:
        await transport.aclose()
        admin.close()
