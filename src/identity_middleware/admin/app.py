"""The admin API as a mountable Starlette (ASGI) app: a thin shell over :class:`AdminAPI`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..stores.base import Store
from .dashboard import dashboard_routes
from .errors import AdminError, Reply, method_not_allowed, not_found, payload_too_large
from .prometheus import DEFAULT_TOP
from .routes import ROUTES, AdminAPI

__all__ = ["MAX_BODY_SIZE", "create_admin_app"]

MAX_BODY_SIZE = 1_048_576
# A "/" that arrived as %2F inside one path segment: routing must not see it as a separator.
_SLASH = "\ue000"


class RawSegments:
    """Route on the raw path: ``%2F`` in a segment is part of an id (``DELETE /v2/identities/a%2Fb``
    deletes identity ``a/b``), not a ``/`` that reaches another route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if raw and b"%2f" in raw.lower():
            segments = raw.split(b"?", 1)[0].decode("latin-1").split("/")
            scope = {**scope, "path": "/".join(unquote(segment).replace("/", _SLASH) for segment in segments)}
        await self.app(scope, receive, send)


def to_response(reply: Reply) -> Response:
    return Response(reply.content or None, status_code=reply.status, headers=dict(reply.headers),
                    media_type="application/json" if reply.content else None)


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_SIZE:
        raise payload_too_large(MAX_BODY_SIZE)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_SIZE:
            raise payload_too_large(MAX_BODY_SIZE)
        chunks.append(chunk)
    return b"".join(chunks)


def _endpoint(api: AdminAPI, template: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            body = await _read_body(request) if request.method in ("POST", "PUT", "PATCH") else b""
        except AdminError as error:
            return to_response(error.reply())
        reply = await api.handle(
            template,
            request.method,
            params={name: str(value).replace(_SLASH, "/") for name, value in request.path_params.items()},
            query={name: request.query_params.getlist(name) for name in request.query_params},
            authorization=request.headers.get("authorization"),
            body=body,
            if_none_match=request.headers.get("if-none-match"),
        )
        return to_response(reply)

    endpoint.__name__ = f"admin {template}"
    return endpoint


async def _not_found(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException) and exc.status_code != 404:
        return Response(status_code=exc.status_code)
    return to_response(not_found("No such route.").reply())


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    route = request.scope.get("route")  # Starlette's partial match: the path matched, the method did not
    template = route.path if isinstance(route, Route) else ""
    return to_response(method_not_allowed(list(ROUTES.get(template, ["GET"]))).reply())


def create_admin_app(store: Store, *, token: str | None, workspace_id: str = "default",
                     metrics_token: str | None = None, metrics_top: int = DEFAULT_TOP) -> Starlette:
    """The admin REST API over ``store``; every route needs ``Authorization: Bearer <token>``.

    ``token`` is keyword-only and required: pass ``token=None`` to serve without auth (e.g. behind
    your own auth middleware). Mount it anywhere: ``app.mount("/admin", create_admin_app(...))``.
    The caller owns ``store`` and closes it. ``GET /`` serves the Identity Analytics dashboard (it
    asks for the token in the browser); ``GET /metrics`` the Prometheus exposition, behind
    ``metrics_token`` when given (else ``token``), with the ``metrics_top`` identities by cost
    labelled one by one and the rest summed. ``workspace_id`` is what identity records carry as
    theirs (orq's SDK requires one).
    """
    api = AdminAPI(store, token=token, workspace_id=workspace_id)
    # Each route takes its own methods (and HEAD with GET): any other is a JSON 405 naming them in Allow.
    routes = [Route(template, _endpoint(api, template), methods=list(ROUTES.get(template, ["GET"])))
              for template in api.templates]
    routes += dashboard_routes(store, token=token, metrics_token=metrics_token, metrics_top=metrics_top)
    return Starlette(routes=routes, middleware=[Middleware(RawSegments)],
                     exception_handlers={404: _not_found, 405: _method_not_allowed})
