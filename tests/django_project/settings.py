"""The test site's settings, applied with ``override_settings(**SITE)`` over whatever is configured."""

from __future__ import annotations

from typing import Any

AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"
IDENTITY = "identity_middleware.django.IdentityMiddleware"

SITE: dict[str, Any] = {
    "INSTALLED_APPS": [
        "django.contrib.contenttypes",
        "django.contrib.auth",
        "django.contrib.sessions",
        "identity_middleware.django",
    ],
    "MIDDLEWARE": ["django.contrib.sessions.middleware.SessionMiddleware", AUTH, IDENTITY],
    "ROOT_URLCONF": "django_project.urls",
    "ALLOWED_HOSTS": ["testserver"],
    "SESSION_ENGINE": "django.contrib.sessions.backends.signed_cookies",
    "AUTHENTICATION_BACKENDS": ["django_project.auth.MemoryBackend"],
    "IDENTITY_MIDDLEWARE": {"STORE_URL": "memory://"},
}
