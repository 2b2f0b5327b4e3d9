"""Operators' face over the stores: the admin REST API (``/v2/identities``) for ASGI and Django."""

from __future__ import annotations

from .app import create_admin_app
from .errors import Reply
from .handlers import AdminRequest
from .openapi import openapi_document
from .routes import ROUTES, AdminAPI

__all__ = ["ROUTES", "AdminAPI", "AdminRequest", "Reply", "create_admin_app", "openapi_document"]
