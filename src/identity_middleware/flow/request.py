"""A request as the flow reads it, whatever the framework: the JSON body policy, headers, path, mark."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from ..core.ceilings import ceiling_nanos
from ..core.money import Money, to_nanos
from ..core.resolve import is_json_content_type

__all__ = ["JsonBody", "Mark", "Request", "header_map", "header_text"]


class JsonBody:
    """A JSON request body read for its identity, up to the size limit, and what to replay.

    Shells ask :meth:`allowed` whether to read at all (a JSON content type, a declared length
    within the limit, or none declared), :meth:`feed` it chunks until it says stop, then hand the
    app :meth:`read_so_far` byte for byte ahead of whatever they did not read. :meth:`body` is
    the whole body only when it ended within the limit: a larger one is never resolved, however
    its chunks arrived.
    """

    __slots__ = ("_chunks", "_size", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._chunks: list[bytes] = []
        self._size = 0

    @classmethod
    def allowed(cls, content_type: str | None, content_length: str | None, limit: int) -> bool:
        """Whether to read the body at all: a JSON content type, and a declared length (if any) within ``limit``."""
        return is_json_content_type(content_type) and cls.within(content_length, limit)

    @staticmethod
    def within(content_length: str | None, limit: int) -> bool:
        """Whether a declared ``Content-Length`` (if any) allows reading: a number up to ``limit``."""
        if content_length is None or not content_length.strip():
            return True
        try:
            declared = int(content_length)
        except ValueError:
            return False
        return 0 <= declared <= limit

    def feed(self, chunk: bytes) -> bool:
        """Keep ``chunk``; ``False`` once past the limit (read no more: the body stays unresolved)."""
        if chunk:
            self._chunks.append(chunk)
            self._size += len(chunk)
        return self._size <= self.limit

    def read_so_far(self) -> bytes:
        if len(self._chunks) > 1:
            self._chunks = [b"".join(self._chunks)]
        return self._chunks[0] if self._chunks else b""

    def body(self) -> bytes | None:
        """The body, once it has ended, when within the limit."""
        return self.read_so_far() if self._size <= self.limit else None


def header_text(raw: bytes) -> str:
    """A header value as text: UTF-8 (what clients send), else latin-1 (what HTTP/1.1 allowed)."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def header_map(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers as CEL's ``headers`` map: lowercase names; a repeated header's values joined by ", "."""
    found: dict[str, str] = {}
    for name, value in pairs:
        name = name.lower()
        found[name] = f"{found[name]}, {value}" if name in found else value
    return found


@dataclass(frozen=True, slots=True)
class Mark:
    """What a ``@budgeted`` view declared: the cost to reserve (nano-USD), and whether it needs
    an identity. Shells find it by routing before the view runs, so admission applies it."""

    estimate: int = 0
    require_identity: bool = False
    auto: bool = False  # estimate="auto": the most the call in the body could cost (see estimate.py)
    max_cost: int | None = None  # the request's LLM cost ceiling (nano-USD), over the middleware's

    @classmethod
    def of(cls, estimate: Money | Literal["auto"] | None, require_identity: bool, max_cost: Money | None) -> Mark:
        """A ``@budgeted`` view's mark from the decorator's arguments (USD); invalid amounts raise ``ValueError``."""
        auto = estimate == "auto"
        return cls(to_nanos(estimate) if estimate is not None and not auto else 0, require_identity, auto,
                   None if max_cost is None else ceiling_nanos(max_cost))


@dataclass(slots=True)
class Request:
    """What the flow reads of a request: the JSON body if one was read, a header lookup (by the
    configured names), the path (for configured estimates) and the view's mark, if known; the
    framework's own request (ASGI scope, WSGI environ, Django request) for the app's callables;
    and every header (lowercase names), asked for only when a match expression reads them."""

    body: bytes | None
    header: Callable[[str], str | None]
    path: str = ""
    mark: Mark | None = None
    native: object = None
    headers: Callable[[Any], dict[str, str]] | None = None  # the shell's reader, given ``native``
