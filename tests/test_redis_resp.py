"""The multiplexed path's command encoding: what redis-py would send, byte for byte."""

from __future__ import annotations

import pytest
from redis.connection import Encoder, PythonRespSerializer

from identity_middleware.stores.redis.accelerated.resp import pack, pack_eval
from identity_middleware.stores.redis.scripts import SETTLE
from identity_middleware.stores.redis.steps import Eval


def redis_py(*args: object) -> bytes:
    serializer = PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode)
    return b"".join(serializer.pack(*args))


@pytest.mark.parametrize("args", [[], ["a", 1, -5, "é", 10**20], [True, 3, "x"], ["", 0]])
def test_an_evalsha_is_packed_as_redis_py_packs_it(args: list[str | int]) -> None:
    keys = ["idm:{ab}:x", "idm:{ab}:y:2026-11-29"]
    packed_keys = pack(keys).partition(b"\r\n")[2]
    plain = [int(arg) if isinstance(arg, bool) else arg for arg in args]  # redis-py refuses bools; we send 1/0
    expected = redis_py("EVALSHA", SETTLE.sha, len(keys), *keys, *plain)
    assert pack_eval(Eval(SETTLE, keys, args, packed_keys)) == expected
    assert pack_eval(Eval(SETTLE, keys, args)) == expected
