"""Real ``AuthenticationMiddleware`` and sessions without a database: users live in a dict."""

from __future__ import annotations

from typing import Any

USERS = {1: "alice", 2: "bob"}


class MemoryBackend:
    """An authentication backend is duck-typed; this one only loads users by id."""

    def authenticate(self, request: Any, **credentials: Any) -> None:
        return None

    def get_user(self, user_id: Any) -> Any:
        from django.contrib.auth.models import User

        name = USERS.get(int(user_id))
        return None if name is None else User(id=int(user_id), username=name)

    async def aget_user(self, user_id: Any) -> Any:
        return self.get_user(user_id)


def session_cookie(user_id: int) -> str:
    """The signed-cookie session of a logged-in user (what ``login()`` would store)."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.signed_cookies import SessionStore

    user = MemoryBackend().get_user(user_id)
    session = SessionStore()
    session[SESSION_KEY] = str(user_id)
    session[BACKEND_SESSION_KEY] = "django_project.auth.MemoryBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return str(session.session_key)
