"""The admin API for Django: a URLconf to ``include()``, async views over the same :class:`AdminAPI`.

``path("admin-api/", include("identity_middleware.admin.django"))`` serves ``admin-api/v2/identities``
and the rest. The store is the one ``identity_middleware.django`` uses under
``settings.IDENTITY_MIDDLEWARE`` (so the API sees the site's own traffic, also on ``"memory://"``),
the bearer token from ``settings.IDENTITY_MIDDLEWARE["ADMIN_TOKEN"]``: the key must
be present, and ``None`` disables auth on purpose.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import unquote

from ..extras import requires_extra

with requires_extra("django", "identity_middleware.admin.django"):
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.http import HttpRequest, HttpResponse
    from django.urls import URLPattern, path, re_path
    from django.views.decorators.csrf import csrf_exempt

    from ..django.conf import close_stores, get_store
    from ..stores import Store
    from .dashboard import dashboard_file, metrics_reply
    from .errors import Reply, not_found
    from .prometheus import DEFAULT_TOP
    from .routes import OPENAPI_PATH, ROUTES, AdminAPI, match

__all__ = ["admin_api", "close_stores", "configured_store", "urlpatterns"]



def _config() -> dict[str, Any]:
    config = getattr(settings, "IDENTITY_MIDDLEWARE", None) or {}
    if not isinstance(config, dict):
        raise ImproperlyConfigured("settings.IDENTITY_MIDDLEWARE must be a dict")
    return config


def configured_store() -> Store:
    """The store of the Django middleware under the current settings: one per URL per process."""
    return get_store()


def admin_api() -> AdminAPI:
    """The API over the configured store, with the configured token (the key is required)."""
    config = _config()
    if "ADMIN_TOKEN" not in config:
        raise ImproperlyConfigured(
            'Set settings.IDENTITY_MIDDLEWARE["ADMIN_TOKEN"] to a secret (or to None to disable auth on purpose).')
    token = config["ADMIN_TOKEN"]
    return AdminAPI(configured_store(), token=None if token is None else str(token))


def _to_response(reply: Reply) -> HttpResponse:
    response = HttpResponse(reply.content, status=reply.status,
                            content_type="application/json" if reply.content else None)
    for name, value in reply.headers:
        response[name] = value
    return response


def _raw_route(request: HttpRequest) -> tuple[str, dict[str, str]] | None:
    """The route of the raw path when it has a ``%2F`` (Django routes on the decoded path, where it is
    a separator): from ``REQUEST_URI``/``RAW_URI`` (WSGI servers) or the ASGI scope's ``raw_path``."""
    scope = getattr(request, "scope", None)
    raw: str | bytes | None = (request.META.get("RAW_URI") or request.META.get("REQUEST_URI")
                               or (scope.get("raw_path") if isinstance(scope, dict) else None))
    if not raw:
        return None
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    path_part = text.split("?", 1)[0]
    if "%2f" not in path_part.lower():
        return None
    segments = [unquote(segment) for segment in path_part.split("/")]
    found = match(segments[segments.index("v2"):]) if "v2" in segments else None
    return found if found is not None else ("", {})  # "": no such route (AdminAPI answers 404)


def _view(template: str) -> Callable[..., Coroutine[Any, Any, HttpResponse]]:
    async def view(request: HttpRequest, **params: str) -> HttpResponse:
        routed = _raw_route(request)
        if routed is not None:
            template_now, params = routed
        else:
            template_now = template
        reply = await admin_api().handle(
            template_now,
            request.method or "GET",
            params=params,
            query={name: values for name, values in request.GET.lists()},
            authorization=request.headers.get("Authorization"),
            body=request.body if request.method in ("POST", "PUT", "PATCH") else b"",
            if_none_match=request.headers.get("If-None-Match"),
        )
        return _to_response(reply)

    return csrf_exempt(view)


async def _no_route(request: HttpRequest, rest: str = "") -> HttpResponse:
    if _raw_route(request) is not None:  # "a%2Fb%2Fc" decoded into more segments than any route has
        return await _any_route(request)
    return _to_response(not_found("No such route.").reply())


def _django_route(template: str) -> str:
    # "/v2/identities/{identity_id}" -> "v2/identities/<str:identity_id>" (include() supplies the prefix)
    return re.sub(r"\{(\w+)\}", r"<str:\1>", template.lstrip("/"))


_any_route = _view(OPENAPI_PATH)  # re-routed by the raw path before it answers


async def _dashboard(request: HttpRequest) -> HttpResponse:
    """The Identity Analytics page at the URLconf's root (its files are relative: include() it at a path
    ending in ``/``)."""
    return _to_response(dashboard_file("index.html"))


async def _asset(request: HttpRequest, name: str) -> HttpResponse:
    return _to_response(dashboard_file("" if name == "index.html" else name))


async def _metrics(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``, behind ``IDENTITY_MIDDLEWARE["METRICS_TOKEN"]`` when set, else the admin token;
    ``METRICS_TOP`` identities labelled one by one (as ``create_admin_app(metrics_top=...)``)."""
    api = admin_api()  # checks ADMIN_TOKEN is configured
    config = _config()
    token = config.get("METRICS_TOKEN", api.token)
    reply = await metrics_reply(api.store, request.headers.get("Authorization"),
                                None if token is None else str(token), int(config.get("METRICS_TOP", DEFAULT_TOP)))
    return _to_response(reply)


urlpatterns: list[URLPattern] = [
    *(path(_django_route(template), _view(template)) for template in [*ROUTES, OPENAPI_PATH]),
    path("", _dashboard),
    path("static/<str:name>", _asset),
    path("metrics", _metrics),
    re_path(r"^(?P<rest>.*)$", csrf_exempt(_no_route)),
]
