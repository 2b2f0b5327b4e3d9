"""Bearer-token check for the admin API, in constant time."""

from __future__ import annotations

import hmac

__all__ = ["bearer_token_matches"]


def bearer_token_matches(authorization: str | None, token: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``token``; always true when auth is off (``None``)."""
    if token is None:
        return True
    if not authorization:
        return False
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credentials.strip().encode(), token.encode())
