"""A small Django site for the Django tests: settings, URLs, views and a database-free auth backend."""

from __future__ import annotations

import django
from django.conf import settings

BASE = {
    "SECRET_KEY": "identity-middleware-tests",
    "ALLOWED_HOSTS": ["testserver"],
    "INSTALLED_APPS": [],
    "DATABASES": {},
    "USE_TZ": True,
}


def setup() -> None:
    """Configure Django once per test session (another test module may have done it already);
    each test module then applies ``django_project.settings.SITE`` with ``override_settings``."""
    if not settings.configured:
        settings.configure(**BASE)
        django.setup()
