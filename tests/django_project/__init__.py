"""A small Django site for the Django tests: settings, URLs, views and a database-free auth backend."""

from __future__ import annotations

import django
import django.conf

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
    # django.conf.settings, spelled out: the submodule django_project.settings shadows a bare ``settings``.
    if not django.conf.settings.configured:
        django.conf.settings.configure(**BASE)
        django.setup()
