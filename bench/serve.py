"""Serve one benchmarked ASGI app under uvicorn (one worker, no access log); run.py starts it as a subprocess."""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os

import uvicorn

from . import gcstats
from .apps import build_app, make_store


def default_loop() -> str:
    return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


def default_http() -> str:
    return "httptools" if importlib.util.find_spec("httptools") else "h11"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--app", choices=("bare", "floor", "memory", "free", "redis"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url")
    parser.add_argument("--upstream", help="the LLM upstream's base URL: serve the realistic app (llm_apps.py)")
    parser.add_argument("--loop", default=default_loop())
    parser.add_argument("--http", default=default_http())
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() once the app is built: its objects are left out of every collection")
    args = parser.parse_args(argv)
    if os.environ.get(gcstats.ENV):
        gcstats.serve(os.environ[gcstats.ENV])
    store = make_store(args.app, args.redis_url) if args.app != "floor" else None
    if args.app == "floor":
        from .floor import build_floor_app

        app = build_floor_app()
    elif args.upstream:
        from .llm_apps import build_llm_app

        app = build_llm_app(store, args.upstream)
    else:
        app = build_app(store)
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop=args.loop, http=args.http,
                access_log=False, log_level="warning", workers=1)


if __name__ == "__main__":
    main()
