"""``IdentityWSGIMiddleware``: PEP 3333 middleware that resolves, gates, attaches and meters identities.

Also home of the metered response iterable the Django shell shares with it.
"""

from __future__ import annotations

import inspect
import io
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

from .context import Meter, bind, unbind
from .core.errors import ErrorResponse, invalid_identity
from .core.resolve import (
    Resolved,
    is_json_content_type,
    resolve_auth,
    resolve_tagged,
)
from .core.validation import InvalidIdentity
from .gate import Gate, GateConfig, GateOptions

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from typing_extensions import Unpack

__all__ = [
    "ENVIRON_KEY",
    "IdentityWSGIMiddleware",
    "MeteredIterable",
    "ReplayedInput",
    "read_json_body",
]

ENVIRON_KEY = "identity_middleware.identity"
_READ_CHUNK = 65_536


class _Input(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...

    def readline(self, size: int = ..., /) -> bytes: ...


# -- resolution from request parts (shared with the Django shell) ---------------------------------
# -- the request body -----------------------------------------------------------------------------
class ReplayedInput:
    """``wsgi.input`` for the app: the bytes already read, then the rest of the original stream."""

    def __init__(self, head: bytes, rest: _Input) -> None:
        self._head = io.BytesIO(head)
        self._rest = rest

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self._head.read() + self._rest.read()
        data = self._head.read(size)
        if len(data) < size:
            data += self._rest.read(size - len(data))
        return data

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        line = self._head.readline(limit)
        if line.endswith(b"\n") or (limit >= 0 and len(line) >= limit):
            return line
        return line + self._rest.readline(limit - len(line) if limit >= 0 else -1)

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


def _read_up_to(stream: _Input, size: int) -> bytes:
    """Up to ``size`` bytes; fewer only when the stream ends (a client that sent less than it said)."""
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = stream.read(min(remaining, _READ_CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_json_body(environ: WSGIEnvironment, max_body_size: int) -> bytes | None:
    """Read a JSON body of at most ``max_body_size`` bytes and put it back for the app.

    Never reads past ``CONTENT_LENGTH`` (a server's input may block there). Without a length the
    body is read only when the server marks its input terminated (``wsgi.input_terminated``, e.g.
    a chunked request), and then only up to the limit; what was read is replayed ahead of the rest.
    Non-JSON and larger bodies are not touched. ``None`` when nothing usable was read.
    """
    if not is_json_content_type(environ.get("CONTENT_TYPE")):
        return None
    stream: _Input = environ["wsgi.input"]
    declared = environ.get("CONTENT_LENGTH") or ""
    if declared.strip():
        try:
            length = int(declared)
        except ValueError:
            return None
        if length <= 0 or length > max_body_size:
            return None
        body = _read_up_to(stream, length)
        environ["wsgi.input"] = io.BytesIO(body)  # everything the client sent (or said it would)
        return body
    if not environ.get("wsgi.input_terminated"):
        return None  # PEP 3333: no length means no body the app may read
    body = _read_up_to(stream, max_body_size + 1)
    if len(body) > max_body_size:
        environ["wsgi.input"] = ReplayedInput(body, stream)
        return None
    environ["wsgi.input"] = io.BytesIO(body)
    return body


# -- the response ---------------------------------------------------------------------------------
class MeteredIterable:
    """A response iterable whose iteration runs with the request's meter bound, and whose end
    (exhaustion, an error, or ``close()``, whichever comes first) settles the request once.

    ``settle(error)`` commits; ``failed()`` says whether the response is an error (status >= 400)
    at the time it ends. The inner iterable's ``close()`` is always called from ours.
    """

    def __init__(
        self,
        inner: Iterable[bytes],
        meter: Meter,
        settle: Callable[[bool], None],
        failed: Callable[[], bool] = lambda: False,
    ) -> None:
        self._inner = inner
        self._iterator: Iterator[bytes] | None = None
        self._meter = meter
        self._settle = settle
        self._failed = failed
        self._closed = False

    def __iter__(self) -> MeteredIterable:
        return self

    def __next__(self) -> bytes:
        # Bound around each step, so a generator that calls ``record_usage`` adds to this request.
        token = bind(self._meter)
        try:
            if self._iterator is None:
                self._iterator = iter(self._inner)
            return next(self._iterator)
        except StopIteration:
            self._settle(self._failed())
            raise
        except BaseException:
            self._settle(True)
            raise
        finally:
            unbind(token)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self._inner, "close", None)
        token = bind(self._meter)
        failed = True
        try:
            if close is not None:
                close()
            failed = False
        finally:
            unbind(token)
            self._settle(failed or self._failed())


def _send_error(start_response: StartResponse, error: ErrorResponse) -> list[bytes]:
    start_response(f"{error.status} {_REASONS.get(error.status, 'Error')}", list(error.headers))
    return [error.body]


_REASONS = {400: "Bad Request", 401: "Unauthorized", 429: "Too Many Requests", 503: "Service Unavailable"}


class IdentityWSGIMiddleware:
    """Wrap any WSGI app: ``app.wsgi_app = IdentityWSGIMiddleware(app.wsgi_app, store=...)``.

    Per request: the identity comes from the JSON body (``identity`` / ``orq.identity``), an
    identity header (``HTTP_X_IDENTITY_ID``...), ``REMOTE_USER`` or the ``resolver(environ)``, in
    that order; it is validated (400), rate limited and budget-checked (429), attached as
    ``environ["identity_middleware.identity"]`` and ``current_identity()``, and the usage recorded
    with ``record_usage`` is committed once when the server closes the response iterable. Only
    JSON bodies up to ``max_body_size`` are read, and they are replayed to the app byte for byte.
    Uses the store's sync operations: no event loop per request.
    """

    def __init__(self, app: WSGIApplication, **options: Unpack[GateOptions]) -> None:
        self.app = app
        self.gate = Gate(GateConfig.build(**options))
        self.store = self.gate.store
        header_names = self.gate.header_names
        self._environ_keys = {name: "HTTP_" + name.upper().replace("-", "_") for name in header_names}
        self._resolver = self.gate.config.resolver

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        body = read_json_body(environ, self.gate.config.max_body_size)
        try:
            resolved = self._resolve(environ, body)
        except InvalidIdentity as error:
            return _send_error(start_response, invalid_identity(error))
        outcome = self.gate.admit(resolved, estimate=self.gate.estimate_for(environ.get("PATH_INFO", "")))
        if isinstance(outcome, ErrorResponse):
            return _send_error(start_response, outcome)
        environ[ENVIRON_KEY] = None if outcome is None else outcome.identity
        if outcome is None:
            return self.app(environ, start_response)
        return self._tracked(outcome, environ, start_response)

    def _resolve(self, environ: WSGIEnvironment, body: bytes | None) -> Resolved | None:
        def header(name: str) -> str | None:
            value = environ.get(self._environ_keys[name])
            return value if isinstance(value, str) else None

        resolved = resolve_tagged(body, header, self.gate.header_names)
        if resolved is not None:
            return resolved
        found: object = environ.get("REMOTE_USER") or None
        if found is None and self._resolver is not None:
            found = self._resolver(environ)
            if inspect.isawaitable(found):
                raise TypeError("a WSGI resolver must be a plain function, not a coroutine function")
        return resolve_auth(found)

    def _tracked(self, meter: Meter, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        status = 500  # an app that never starts a response failed

        def start(status_line: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None,
                  /) -> Callable[[bytes], object]:
            nonlocal status
            status = int(status_line.split(" ", 1)[0])
            return start_response(status_line, headers, exc_info)

        def settle(error: bool) -> None:
            self.gate.settle(meter, error=error)

        token = bind(meter)
        try:
            result = self.app(environ, start)
        except BaseException:
            settle(True)
            raise
        finally:
            unbind(token)
        return MeteredIterable(result, meter, settle, lambda: status >= 400)
