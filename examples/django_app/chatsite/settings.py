"""Settings of the example: the in-memory store by default, Redis when ``REDIS_URL`` is set."""

from __future__ import annotations

import os

SECRET_KEY = "example-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
ROOT_URLCONF = "chatsite.urls"
USE_TZ = True
DATABASES: dict[str, dict[str, str]] = {}  # the example keeps nothing in a database
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "identity_middleware.django",  # system checks and ``manage.py identities``
]

MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",  # on, as `check --deploy` asks; the API view is exempt
    "django.contrib.auth.middleware.AuthenticationMiddleware",  # request.user, before ours
    "identity_middleware.django.IdentityMiddleware",
]

IDENTITY_MIDDLEWARE = {
    "STORE_URL": os.environ.get("REDIS_URL", "memory://"),
    # Every identity the middleware creates gets a 2-cent daily budget, so a few calls show a 429.
    "DEFAULT_BUDGETS": {"daily": "0.02"},
    # OpenAI's own end-user fields (`user`, `safety_identifier`) name the identity too, after a body
    # `identity` object and before the header: clients of the OpenAI SDK need nothing of ours.
    "SOURCES": ("body", "user_field", "header", "auth"),
    "RATE_LIMIT": "60/minute",
}
