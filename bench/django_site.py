"""The Django apps: settings, URLconf and views in one module, served by gunicorn as

    DJANGO_SETTINGS_MODULE=bench.django_site IDM_BENCH_APP=memory \
        gunicorn -w 1 -k sync 'django.core.wsgi:get_wsgi_application()'

``IDM_BENCH_APP`` is ``bare`` (no middleware at all) or ``memory`` / ``redis`` (with
``IDM_BENCH_REDIS_URL``): then ``identity_middleware.django.IdentityMiddleware`` is the only
middleware, configured by ``IDENTITY_MIDDLEWARE["STORE"]`` (a factory, see examples/django_app for
the URL form). No database, sessions, auth or CSRF: the ratio is the middleware against Django alone.
"""

from __future__ import annotations

import json
import os
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.http import require_GET, require_POST

from identity_middleware import record_usage
from identity_middleware.stores import Store

from .apps import CHAT_PATH, COST, INPUT_TOKENS, OUTPUT_TOKENS, STATS_PATH
from .wsgi_apps import APP_ENV, committed, completion, store_from_env

KIND = os.environ.get(APP_ENV, "bare")

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "bench.django_site"
USE_TZ = True
DATABASES: dict[str, Any] = {}
INSTALLED_APPS = [] if KIND == "bare" else ["identity_middleware.django"]
MIDDLEWARE = [] if KIND == "bare" else ["identity_middleware.django.IdentityMiddleware"]
IDENTITY_MIDDLEWARE = {"STORE": "bench.django_site.bench_store"}

_store: Store | None = None


def bench_store() -> Store | None:
    """The store for ``IDM_BENCH_APP`` (prepared with the bench identities), built once per process."""
    global _store
    if _store is None:
        _store = store_from_env()
    return _store


@require_POST
def chat(request: HttpRequest) -> HttpResponse:
    payload = json.loads(request.body)
    if KIND != "bare":
        record_usage(COST, input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS, model=payload.get("model"))
    return HttpResponse(completion(payload.get("model")), content_type="application/json")


@require_GET
def stats(request: HttpRequest) -> HttpResponse:
    return HttpResponse(json.dumps(committed(bench_store())), content_type="application/json")


urlpatterns = [path(CHAT_PATH.lstrip("/"), chat), path(STATS_PATH.lstrip("/"), stats)]

