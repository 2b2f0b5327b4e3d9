"""``IdentityWSGIMiddleware``: PEP 3333; reads the request for the flow, sends its refusals, meters the app."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

from .config import Config, Options
from .core.errors import ErrorResponse, RequestBudgetExceeded
from .core.signing import SIGNATURE_HEADER
from .flow import Flow, JsonBody, Refused, Request, Tracked, header_text
from .flow.headers import budget_headers, cost_known
from .flow.life import RequestLife
from .flow.request import header_map
from .flow.steps import annotate
from .flow.streams import MeteredIterable
from .stores.startup import store_ready

if TYPE_CHECKING:
    from typing import Unpack

    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["ENVIRON_KEY", "IdentityWSGIMiddleware", "MeteredIterable", "ReplayedInput"]

ENVIRON_KEY = "identity_middleware.identity"
_READ_CHUNK = 65_536
_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 429: "Too Many Requests",
            503: "Service Unavailable"}


_CGI_HEADERS = {"CONTENT_TYPE": "content-type", "CONTENT_LENGTH": "content-length"}


def _headers(environ: WSGIEnvironment) -> dict[str, str]:
    """Every header of the request (lowercase names), for match expressions that read ``headers``."""
    pairs = [(key[5:].replace("_", "-"), value) if key.startswith("HTTP_") else (_CGI_HEADERS[key], value)
             for key, value in environ.items()
             if isinstance(value, str) and (key.startswith("HTTP_") or key in _CGI_HEADERS)]
    return header_map((name, header_text(value.encode("latin-1"))) for name, value in pairs)


class _Input(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...

    def readline(self, size: int = ..., /) -> bytes: ...


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


def read_body(environ: WSGIEnvironment, max_body_size: int) -> bytes | None:
    """The JSON body when the flow wants it, put back for the app byte for byte.

    Never reads past ``CONTENT_LENGTH`` (a server's input may block there). Without a length the
    body is read only when the server marks its input terminated (``wsgi.input_terminated``, e.g.
    a chunked request), and then only up to the limit; what was read is replayed ahead of the rest.
    """
    declared = environ.get("CONTENT_LENGTH") or ""
    if not JsonBody.allowed(environ.get("CONTENT_TYPE"), declared, max_body_size):
        return None
    stream: _Input = environ["wsgi.input"]
    length = int(declared) if declared.strip() else None  # a number within the limit: allowed checked it
    head = b""
    if length is not None:  # the usual case: read as one
        head = stream.read(length)
        if len(head) == length:
            environ["wsgi.input"] = io.BytesIO(head)
            return head or None
        # the client sent less, or the server handed over less: read on
    elif not environ.get("wsgi.input_terminated"):
        return None  # PEP 3333: no length means no body the app may read
    reader = JsonBody(max_body_size)
    reader.feed(head)
    remaining = length - len(head) if length is not None else max_body_size + 1
    while remaining > 0:
        chunk = stream.read(min(remaining, _READ_CHUNK))
        if not chunk:
            break  # the client sent less than it said
        remaining -= len(chunk)
        if not reader.feed(chunk):
            break
    head = reader.read_so_far()
    environ["wsgi.input"] = io.BytesIO(head) if length is not None else ReplayedInput(head, stream)
    return reader.body() if head else None


def _send_error(start_response: StartResponse, error: ErrorResponse) -> list[bytes]:
    start_response(f"{error.status} {_REASONS.get(error.status, 'Error')}", list(error.headers))
    return [error.body]


class IdentityWSGIMiddleware:
    """Wrap any WSGI app: ``app.wsgi_app = IdentityWSGIMiddleware(app.wsgi_app, store=...)``; the
    keyword options are :class:`~identity_middleware.config.Config`'s.

    Per request: the identity comes from the JSON body (``identity`` / ``orq.identity``), an
    identity header (``HTTP_X_IDENTITY_ID``...), ``REMOTE_USER`` or the ``resolver(environ)``, in
    that order; it is validated (400), rate limited and budget-checked (429), attached as
    ``environ["identity_middleware.identity"]`` and ``current_identity()``, and the usage recorded
    with ``record_usage`` is committed once when the server closes the response iterable. Only
    JSON bodies up to ``max_body_size`` are read, and they are replayed to the app byte for byte.
    Uses the store's sync operations: no event loop per request. The keyword options are
    :class:`~identity_middleware.config.Options`; invalid ones raise ``InvalidOption`` here.
    """

    def __init__(self, app: WSGIApplication, **options: Unpack[Options]) -> None:
        self.app = app
        self.config = Config.of(**options)
        self.flow = Flow(self.config)
        self.store = self.config.store
        store_ready(self.store)  # at startup: StoreMisconfigured raised, an unreachable store logged
        session = self.config.session
        self._environ_keys = {name: "HTTP_" + name.upper().replace("-", "_")
                              for name in (*self.config.header_names, SIGNATURE_HEADER, *self.config.fact_headers,
                                           *((session.header,) if session is not None and session.header else ()))}

    def _request(self, environ: WSGIEnvironment) -> Request:
        def header(name: str) -> str | None:
            value = environ.get(self._environ_keys[name])
            # PEP 3333 hands headers over as latin-1 text: the bytes the client sent, as UTF-8.
            return header_text(value.encode("latin-1")) if isinstance(value, str) else None

        body = read_body(environ, self.config.max_body_size)
        return Request(body, header, environ.get("PATH_INFO", ""), None, environ, _headers)

    def _auth(self, environ: WSGIEnvironment) -> object:
        found = environ.get("REMOTE_USER") or None
        if found is None and self.config.resolver is not None:
            return self.config.resolver(environ)
        return found

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        outcome = self.flow.run(self.flow.admission(self._request(environ)), lambda: self._auth(environ))
        annotate(outcome)
        if isinstance(outcome, Refused):
            return _send_error(start_response, outcome.error)
        if not isinstance(outcome, Tracked):
            environ[ENVIRON_KEY] = None
            with RequestLife(self.flow, outcome):
                return self.app(environ, start_response)
        meter = outcome.meter
        environ[ENVIRON_KEY] = meter.identity
        life = RequestLife(self.flow, meter)

        steering = self.config.budget_headers
        started = False

        def start(status_line: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None,
                  /) -> Callable[[bytes], object]:
            nonlocal started
            started = True
            life.answered(int(status_line.split(" ", 1)[0]))
            # A complete body declares its length: then, with no stream of the request open, its cost is known.
            if steering and cost_known(meter) and any(name.lower() == "content-length" for name, _ in headers):
                headers = [*headers, *budget_headers(meter)]
            return start_response(status_line, headers, exc_info)

        try:
            with life:
                result = self.app(environ, start)
        except RequestBudgetExceeded as error:  # a ceiling the app did not catch: 429, if still possible
            if started:
                raise
            life.answered(429)
            return _send_error(start_response, error.response)
        # The response ends when the server closes its iterable: settled then (PEP 3333).
        return MeteredIterable(result, meter, self.flow, lambda: life.failed)
