"""The Django app ``identity_middleware.django``: installs the configuration system checks."""

from __future__ import annotations

from django.apps import AppConfig


class IdentityMiddlewareConfig(AppConfig):
    name = "identity_middleware.django"
    label = "identity_middleware"
    verbose_name = "Identity middleware"

    def ready(self) -> None:
        from .checks import check_settings  # noqa: F401  (importing registers the checks)
