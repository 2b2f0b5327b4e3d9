"""``IdentityMiddleware`` for Django: the request flow around the rest of the chain, sync or async."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.urls import Resolver404, resolve

from ..core.errors import RequestBudgetExceeded
from ..flow import Mark
from ..stores.startup import store_ready
from .conf import current_flow
from .decorators import mark_of
from .shell import aserve, error_response, serve

__all__ = ["IdentityMiddleware"]

_VIEW_CACHE_SIZE = 4096
_UNMARKED = Mark()


class IdentityMiddleware:
    """``MIDDLEWARE = [..., "django.contrib.auth.middleware.AuthenticationMiddleware",
    "identity_middleware.django.IdentityMiddleware", ...]``, configured by
    ``settings.IDENTITY_MIDDLEWARE``.

    The identity comes from the JSON body, an identity header, ``request.user`` or the resolver;
    it is validated (400), gated (401/429/503), set as ``request.identity`` and
    ``current_identity()``, and the request's usage is committed once when the response ends.
    A view marked ``@budgeted`` is found before it runs, so its estimate is reserved and its
    identity required in the same admission.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        self._views: dict[tuple[str, str, str], Mark] = {}
        # Django builds its middleware when the handler is created, at startup (WSGI and ASGI alike):
        # invalid settings raise ImproperlyConfigured here, a store that can never work stops it
        # here, in words; an unreachable one is logged.
        store_ready(current_flow().store)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self.__acall__(request)
        return serve(request, current_flow(), self.view_of(request), self.get_response)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        return await aserve(request, current_flow(), self.view_of(request), self.get_response)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """A request's cost ceiling the view did not catch: ``429 request_budget_exceeded``."""
        if isinstance(exception, RequestBudgetExceeded):
            return error_response(exception.response)
        return None

    def view_of(self, request: HttpRequest) -> Mark | None:
        """The ``@budgeted`` mark of the view this request will reach.

        The URL is resolved here (cached per path) rather than in ``process_view``, because
        admission must happen in the same frame that binds the contextvar and settles, in the
        handler's own sync or async mode; Django runs ``process_view`` elsewhere.
        """
        urlconf = getattr(request, "urlconf", None) or settings.ROOT_URLCONF
        key = (str(urlconf), request.method or "", request.path_info)
        found = self._views.get(key)
        if found is None:
            found = _marker(request.path_info, urlconf, request.method or "") or _UNMARKED
            if len(self._views) >= _VIEW_CACHE_SIZE:
                self._views.clear()
            self._views[key] = found
        return None if found is _UNMARKED else found


def _marker(path: str, urlconf: Any, method: str) -> Mark | None:
    try:
        match = resolve(path, urlconf=urlconf)
    except Resolver404:
        return None
    found = mark_of(match.func)
    view_class = getattr(match.func, "view_class", None)
    if found is None and view_class is not None:  # a class-based view with a decorated method
        found = mark_of(getattr(view_class, method.lower(), None))
    return found
