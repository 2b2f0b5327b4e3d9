"""Our modules that run code for one request: what a newcomer follows (docs/design.md).

One ASGI request (admission and settlement) through ``IdentityMiddleware`` on a ``RedisStore``,
after warm-up, under ``sys.setprofile``: every module of ``identity_middleware`` whose code ran,
with the functions that did. Counted once with the accelerated transports and once through
redis-py alone (``multiplex=False``); ``--before REV`` counts ``src/`` as committed at ``REV`` too,
in a child process on the same private ``redis-server``.

Each count is given whole and for the admission alone (what ran before the view was called: the
issue that asked for "a handful of modules" counted 14 for one async admission), and each of the
two also without the modules where only a value type was built (nothing but ``__init__`` ran: a
reader meets the type, not a step to follow).

    .venv/bin/python -m bench.modules
    .venv/bin/python -m bench.modules --before daeea84 --names
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

from .apps import CHAT_PATH, chat_body, private_redis
from .revisions import REPO, export

PACKAGE = "identity_middleware"
STORE = f"{PACKAGE}.stores.redis"
ADMISSION = "(admission)"  # a marker among a module's functions: it ran before the view was called


async def _count(url: str, multiplex: bool) -> dict[str, list[str]]:
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from identity_middleware import IdentityMiddleware
    from identity_middleware.stores import RedisStore

    admitted: set[str] = set()  # the modules that ran before the view: the admission
    phase = {"admitting": False}

    async def chat(request: Request) -> JSONResponse:
        if phase["admitting"]:
            phase["admitting"] = False
            admitted.update(seen)
        return JSONResponse({"ok": True})

    store = RedisStore.from_url(url, prefix=f"modules-{multiplex}", multiplex=multiplex)
    app = IdentityMiddleware(Starlette(routes=[Route(CHAT_PATH, chat, methods=["POST"])]), store=store)
    body = chat_body("alice")
    seen: dict[str, set[str]] = {}

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            module = frame.f_globals.get("__name__", "")
            if module.startswith(PACKAGE):
                seen.setdefault(module, set()).add(frame.f_code.co_name)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        for _ in range(3):  # warm: the identity created, its record cached, the loop's client made
            await client.post(CHAT_PATH, content=body, headers={"content-type": "application/json"})
        await asyncio.sleep(0.05)
        phase["admitting"] = True
        sys.setprofile(profile)
        reply = await client.post(CHAT_PATH, content=body, headers={"content-type": "application/json"})
        await asyncio.sleep(0.05)  # the settlement's write, on the loop's next tick
        sys.setprofile(None)
    await store.aclose()
    if reply.status_code != 200:
        raise RuntimeError(f"the request answered {reply.status_code}: {reply.text}")
    return {module: sorted(names) + ([ADMISSION] if module in admitted else [])
            for module, names in sorted(seen.items())}


def child(url: str) -> None:
    print(json.dumps({str(multiplex): asyncio.run(_count(url, multiplex)) for multiplex in (True, False)}))


def _measure(url: str, tree: Path | None) -> dict[str, dict[str, list[str]]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree / "src") if tree else None, str(REPO),
                                                      env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-m", "bench.modules", "--child", url], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the count failed ({done.returncode}): {done.stderr[-2000:]}")
    found: dict[str, dict[str, list[str]]] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def _steps(modules: dict[str, list[str]]) -> list[str]:
    """The modules where more than a value type's ``__init__`` ran."""
    return [module for module, functions in modules.items()
            if set(functions) - {"__init__", ADMISSION}]


def _count_line(modules: dict[str, list[str]]) -> str:
    under = [module for module in modules if module.startswith(STORE)]
    steps = _steps(modules)
    return (f"{len(modules)} modules ({len(under)} under stores/redis), "
            f"{len(steps)} without value types ({sum(m.startswith(STORE) for m in steps)} under stores/redis)")


def _report(label: str, counted: dict[str, dict[str, list[str]]], names: bool) -> None:
    for multiplex, modules in counted.items():
        transport = "accelerated" if multiplex == "True" else "redis-py"
        admission = {module: functions for module, functions in modules.items() if ADMISSION in functions}
        print(f"{label} ({transport}): the request: {_count_line(modules)}; "
              f"its admission: {_count_line(admission)}")
        if names:
            for module, functions in modules.items():
                print(f"  {module}: {', '.join(functions)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="also count src/ as committed at this revision")
    parser.add_argument("--names", action="store_true", help="list the modules and their functions")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    with private_redis() as url:
        _report("here", _measure(url, None), args.names)
        if args.before:
            with tempfile.TemporaryDirectory(prefix="bench-src-") as tmp:
                sha, tree = export(args.before, Path(tmp))
                _report(f"at {sha}", _measure(url, tree), args.names)


if __name__ == "__main__":
    main()
