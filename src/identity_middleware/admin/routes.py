"""The admin API's route table and dispatcher: auth, method, errors; shared by the Starlette and Django shells."""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from ..core.errors import IdentityExists, IdentityNotFound, StoreUnavailable, invalid_identity, store_unavailable
from ..core.validation import InvalidIdentity
from ..stores.base import Store
from . import analytics, budget_check, budgets, credits, exports, handlers, identities, overview
from .auth import bearer_token_matches
from .errors import AdminError, Reply, conflict, invalid_request, method_not_allowed, not_found, unauthorized
from .openapi import openapi_document

__all__ = ["METHODS", "ROUTES", "AdminAPI", "Handler", "conditional", "match"]

Handler = Callable[[Store, handlers.AdminRequest], Awaitable[Reply]]

logger = logging.getLogger("identity_middleware.admin")

# Path templates in Starlette syntax; the Django shell translates them. Order matters for no route:
# each template has a fixed number of segments, so none shadows another.
ROUTES: dict[str, dict[str, Handler]] = {
    "/v2/identities": {"GET": identities.list_identities, "POST": identities.create_identity},
    "/v2/identities/{identity_id}": {
        "GET": identities.retrieve_identity,
        "PATCH": identities.update_identity,
        "DELETE": identities.delete_identity,
    },
    "/v2/identities/{identity_id}/budgets": {"GET": handlers.list_budgets},
    "/v2/identities/{identity_id}/budgets/{period}": {
        "GET": handlers.get_budget,
        "PUT": handlers.set_budget,
        "DELETE": handlers.remove_budget,
    },
    "/v2/identities/{identity_id}/budgets/{period}/reset": {"POST": handlers.reset_budget},
    "/v2/identities/{identity_id}/metrics/daily": {"GET": analytics.daily_metrics},
    "/v2/budgets": {"GET": budgets.list_budgets, "POST": budgets.create_budget},
    "/v2/budgets/check": {"POST": budget_check.check_budgets},  # before {budget_id}: "check" is no budget's id
    "/v2/budgets/{budget_id}": {"GET": budgets.get_budget, "PATCH": budgets.update_budget,
                                "DELETE": budgets.delete_budget},
    "/v2/budgets/{budget_id}/reset-consumption": {"POST": budgets.reset_consumption},
    # Credits, our extension (see .credits).
    "/v2/budgets/{budget_id}/top-up": {"POST": credits.top_up},
    "/v2/budgets/{budget_id}/top-ups": {"GET": credits.list_top_ups},
    # The console's extensions (orq's SDK never calls them): see .overview.
    "/v2/analytics/overview": {"GET": overview.overview},
    "/v2/analytics/refusals": {"GET": overview.refusals},
    "/v2/analytics/refusals/export": {"GET": exports.export_refusals},
    "/v2/analytics/identities/count": {"GET": overview.count_identities},
    "/v2/analytics/identities/export": {"GET": exports.export_identities},
}
OPENAPI_PATH = "/openapi.json"


@functools.cache
def query_names(template: str, method: str) -> frozenset[str]:
    """The query parameters the OpenAPI document gives the operation: the only ones it takes."""
    path = openapi_document()["paths"].get(template, {})
    operation = path.get(method.lower(), {})
    return frozenset(parameter["name"] for parameter in [*path.get("parameters", ()), *operation.get("parameters", ())]
                     if parameter.get("in") == "query")


def match(segments: Sequence[str]) -> tuple[str, dict[str, str]] | None:
    """The template and parameters of already-decoded path ``segments`` (``["v2", "identities", "a/b"]``),
    for shells whose framework decoded ``%2F`` before routing (a "/" inside an id stays in its segment)."""
    for template in ROUTES:
        parts = template.strip("/").split("/")
        if len(parts) != len(segments):
            continue
        params: dict[str, str] = {}
        for part, segment in zip(parts, segments, strict=True):
            if part.startswith("{"):
                params[part[1:-1]] = segment
            elif part != segment:
                break
        else:
            return template, params
    return None
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def conditional(reply: Reply, if_none_match: str | None) -> Reply:
    """A 200 with its ``ETag`` (a digest of the body), or a 304 when the client holds that body already."""
    if reply.status != 200:
        return reply
    etag = f'"{hashlib.blake2b(reply.content, digest_size=16).hexdigest()}"'
    if if_none_match is not None:
        held = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        if etag in held or "*" in held:
            return Reply(304, b"", (("etag", etag),))
    return Reply(reply.status, reply.content, (*reply.headers, ("etag", etag)))


class AdminAPI:
    """Answers one admin request: checks the bearer token, picks the handler, maps domain errors to replies."""

    def __init__(self, store: Store, *, token: str | None, workspace_id: str = "default") -> None:
        self.store = store
        self.token = token
        self.workspace_id = workspace_id

    @property
    def templates(self) -> list[str]:
        return [*ROUTES, OPENAPI_PATH]

    async def handle(
        self,
        template: str,
        method: str,
        *,
        params: Mapping[str, str],
        query: Mapping[str, Sequence[str]],
        authorization: str | None,
        body: bytes = b"",
        if_none_match: str | None = None,
    ) -> Reply:
        """The reply; a GET's 200 carries an ``ETag``, and is a bodiless 304 when ``if_none_match`` names it
        (the dashboard polls with conditional requests)."""
        reply = await self._handle(template, method, params=params, query=query, authorization=authorization,
                                   body=body)
        return conditional(reply, if_none_match) if method in ("GET", "HEAD") else reply

    async def _handle(
        self,
        template: str,
        method: str,
        *,
        params: Mapping[str, str],
        query: Mapping[str, Sequence[str]],
        authorization: str | None,
        body: bytes = b"",
    ) -> Reply:
        try:
            if not bearer_token_matches(authorization, self.token):
                raise unauthorized()
            method = "GET" if method == "HEAD" else method
            if template == OPENAPI_PATH:
                if method != "GET":
                    raise method_not_allowed(["GET"])
                return Reply.json(200, openapi_document())
            routes = ROUTES.get(template)
            if routes is None:
                raise not_found("No such route.")
            handler = routes.get(method)
            if handler is None:
                raise method_not_allowed(list(routes))
            unknown = sorted(set(query) - query_names(template, method))
            if unknown:  # a typo ("include_metric") must not pass as a silent default
                raise invalid_request(f"unknown query parameter {unknown[0]!r}.", unknown[0])
            return await handler(self.store, handlers.AdminRequest(params, query, body, self.workspace_id))
        except AdminError as error:
            return error.reply()
        except InvalidIdentity as error:
            return Reply.from_error(invalid_identity(error))
        except IdentityNotFound as error:
            identity = str(error.args[0]) if error.args else params.get("identity_id", "")
            return not_found(f"No identity has the _id or external_id {identity!r}.", identity=identity).reply()
        except IdentityExists as error:
            return conflict(str(error.args[0]) if error.args else "").reply()
        except (StoreUnavailable, ConnectionError, TimeoutError) as error:
            # Stores raise StoreUnavailable; the builtins cover a custom store that lets a socket error through.
            logger.warning("identity store unavailable: %s", error)
            return Reply.from_error(store_unavailable())
