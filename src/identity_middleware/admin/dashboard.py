"""The Identity Analytics dashboard and ``/metrics`` as Starlette routes beside the admin REST API.

The page and its files are shipped in ``admin/static`` and served as they are (no build step,
no CDN). They carry no secret: the browser asks for the admin token and sends it to the REST API,
so the page itself is public and every byte of data stays behind the token. A strict
Content-Security-Policy allows only these files and requests to this origin.
"""

from __future__ import annotations

import functools
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..stores.base import Store
from .auth import bearer_token_matches
from .errors import AdminError, Reply, unauthorized
from .prometheus import DEFAULT_TOP, exposition, snapshot

__all__ = ["CONTENT_SECURITY_POLICY", "dashboard_file", "dashboard_routes", "metrics_reply"]

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}
_JS = "text/javascript; charset=utf-8"
_FILES = {"index.html": "text/html; charset=utf-8", "app.css": "text/css; charset=utf-8",
          **{name: _JS for name in ("app.js", "identity.js", "util.js", "overview.js", "identities.js", "budgets.js",
                                    "live.js")}}


@functools.cache
def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static").joinpath(name).read_bytes()


def dashboard_file(name: str) -> Reply:
    """One of the dashboard's files (``index.html`` is the page), else a 404; with the security headers."""
    if name not in _FILES:
        return Reply(404, b"", tuple(_HEADERS.items()))
    return Reply(200, _static(name), (("content-type", _FILES[name]), *_HEADERS.items()))


async def metrics_reply(store: Store, authorization: str | None, token: str | None, top: int) -> Reply:
    """``GET /metrics``: the exposition behind ``token`` (a 501 without prometheus-client)."""
    if not bearer_token_matches(authorization, token):
        return unauthorized().reply()
    try:
        body, content_type = exposition(await snapshot(store, top))
    except ImportError:
        return AdminError(501, "not_implemented", "GET /metrics needs prometheus-client: "
                                                  "pip install 'identity-middleware[metrics]'.").reply()
    return Reply(200, body, (("content-type", content_type), ("cache-control", "no-store")))


def _response(reply: Reply) -> Response:
    headers = dict(reply.headers)
    media_type = None if "content-type" in headers else "application/json" if reply.content else None
    return Response(reply.content or None, reply.status, headers, media_type=media_type)


async def _index(request: Request) -> Response:
    return _response(dashboard_file("index.html"))


async def _asset(request: Request) -> Response:
    name = request.path_params["name"]
    return _response(dashboard_file("" if name == "index.html" else name))


def _metrics_endpoint(store: Store, token: str | None, top: int) -> Route:
    async def metrics(request: Request) -> Response:
        return _response(await metrics_reply(store, request.headers.get("authorization"), token, top))

    return Route("/metrics", metrics, methods=["GET", "HEAD"])


def dashboard_routes(store: Store, *, token: str | None, metrics_token: str | None = None,
                     metrics_top: int = DEFAULT_TOP) -> list[Route]:
    """``/`` (the dashboard), ``/static/{name}`` (its files) and ``/metrics`` (behind ``metrics_token``,
    else the admin ``token``)."""
    if metrics_top < 1:
        raise ValueError("metrics_top must be at least 1")
    return [
        Route("/", _index, methods=["GET", "HEAD"]),
        Route("/static/{name}", _asset, methods=["GET", "HEAD"]),
        _metrics_endpoint(store, metrics_token if metrics_token is not None else token, metrics_top),
    ]
