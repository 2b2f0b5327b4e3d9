"""ASGI entry point of the example: ``uvicorn chatsite.asgi:application`` (from examples/django_app)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

application = get_asgi_application()
