"""The admin API's route table and dispatcher: auth, method, errors; shared by the Starlette and Django shells."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from ..core.errors import IdentityExists, IdentityNotFound, StoreUnavailable, invalid_identity, store_unavailable
from ..core.validation import InvalidIdentity
from ..stores.base import Store
from . import analytics, handlers, identities
from .auth import bearer_token_matches
from .errors import AdminError, Reply, conflict, method_not_allowed, not_found, unauthorized
from .openapi import openapi_document

__all__ = ["METHODS", "ROUTES", "AdminAPI", "Handler"]

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
}
OPENAPI_PATH = "/openapi.json"
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]

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
