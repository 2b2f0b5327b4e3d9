"""The ``identity-middleware`` console script: the shared commands over a store URL, and ``serve``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .commands import EXIT_USAGE, CommandFailed, Output, add_command, add_commands, execute
from .stores import MemoryStore, Store, store_from_url

__all__ = ["main"]

STORE_URL_ENV = "IDENTITY_MIDDLEWARE_STORE_URL"
TOKEN_ENV = "IDENTITY_MIDDLEWARE_ADMIN_TOKEN"


def memory_note(*, serving: bool) -> str:
    """What a command on the in-memory store should know: where its data goes (stderr, not the output)."""
    lost = "what it holds is lost when the server stops" if serving else "nothing persists across invocations"
    return (f"note: the store is in memory (memory://): {lost}; pass --store-url or set ${STORE_URL_ENV} "
            f"(e.g. redis://localhost:6379/0) to keep identities and budgets")


def cmd_serve(store: Store, args: argparse.Namespace, out: Output) -> None:
    try:
        import uvicorn
    except ImportError:
        raise CommandFailed("serve needs uvicorn: pip install 'identity-middleware[fastapi]'") from None
    from .admin import create_admin_app

    uvicorn.run(create_admin_app(store, token=args.resolved_token), host=args.host, port=args.port,
                log_level=args.log_level)


def build_parser() -> argparse.ArgumentParser:
    store_option = argparse.ArgumentParser(add_help=False)
    store_option.add_argument("--store-url", default=argparse.SUPPRESS,
                              help=f"memory:// or a Redis URL (default: ${STORE_URL_ENV} or memory://)")
    parser = argparse.ArgumentParser(
        prog="identity-middleware", parents=[store_option],
        description="Identities, budgets and 30-day usage metrics in an identity-middleware store.")
    commands = add_commands(parser, parents=[store_option])
    serve = add_command(commands, "serve", cmd_serve, "serve the admin REST API with uvicorn", [store_option])
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--token", help=f"bearer token (default: ${TOKEN_ENV})")
    serve.add_argument("--no-auth", action="store_true", help="serve without a token (trusted networks only)")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 not found/exists/store down, 2 invalid input)."""
    args = build_parser().parse_args(argv)
    out, err = sys.stdout, sys.stderr
    if args.func is cmd_serve:
        args.resolved_token = args.token or os.environ.get(TOKEN_ENV) or None
        if args.resolved_token is None and not args.no_auth:
            print(f"error: refusing to serve without a token: pass --token, set ${TOKEN_ENV}, or --no-auth",
                  file=err)
            return EXIT_USAGE
    url = getattr(args, "store_url", None) or os.environ.get(STORE_URL_ENV) or "memory://"
    try:
        store = store_from_url(url)
    except (ValueError, ImportError) as error:  # a missing extra's error names what to install
        print(f"error: cannot open store {url!r}: {error}", file=err)
        return EXIT_USAGE
    if isinstance(store, MemoryStore):
        print(memory_note(serving=args.func is cmd_serve), file=err)
    try:
        execute(store, args, out)
    except CommandFailed as error:
        print(f"error: {error}", file=err)
        return error.code
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
