"""Hostile input never breaks the app: no 500 from the middleware, the body reaches the app byte for
byte, the size limit holds exactly however the body is chunked; ASGI, WSGI and Django alike."""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import django_project

django_project.setup()

from django.test import Client, override_settings  # noqa: E402

from django_project.settings import SITE  # noqa: E402
from identity_middleware import IdentityMiddleware, IdentityWSGIMiddleware, current_identity  # noqa: E402
from identity_middleware.stores import MemoryStore  # noqa: E402

LIMIT = 256  # a small max_body_size, so hypothesis reaches both sides of it
SETTINGS = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OK = {200, 400, 401}  # the app's answer, or a clean refusal of a bad identity (401 never here: not required)


def _json_text(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


hostile_numbers = st.sampled_from([b"1e309", b"-1e309", b"9" * 4301, b"1" * 20000, b"NaN", b"0x10", b"-"])
deep = st.builds(lambda depth, char: char * depth + (b"]" if char == b"[" else b"}") * 0,
                 st.integers(100, 5000), st.sampled_from([b"[", b'{"a":']))
identity_values = st.one_of(
    st.builds(lambda i: _json_text({"id": i}), st.text(max_size=300)),
    st.builds(_json_text, st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                                       | st.text(max_size=20),
                                       lambda inner: st.lists(inner, max_size=4)
                                       | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)),
    hostile_numbers,
    deep,
    st.binary(max_size=40),
)
bodies = st.one_of(
    st.binary(max_size=600),
    st.builds(lambda identity, pad: b'{"model": "m", "pad": "' + b"x" * pad + b'", "identity": ' + identity + b"}",
              identity_values, st.integers(0, 400)),
    st.builds(lambda identity: b'{"orq": {"identity": ' + identity + b"}}", identity_values),
    st.builds(lambda value: b'{"messages": ' + value + b', "identity": {"id": "u"}}', hostile_numbers | deep),
    st.builds(lambda body, cut: body[:cut], st.just(b'{"identity": {"id": "cut-short"}, "x": [1, 2, 3]}'),
              st.integers(0, 40)),
)
header_values = st.one_of(st.none(), st.binary(min_size=0, max_size=80).filter(lambda v: b"\r" not in v
                                                                                and b"\n" not in v))
content_types = st.sampled_from([b"application/json", b"application/json; charset=utf-8", b"text/plain",
                                 b"application/x-www-form-urlencoded", b"application/problem+json", b"APPLICATION/JSON",
                                 b"multipart/form-data; boundary=x", b"\xff\xfe"])


def _chunks(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(max(cut, 0), len(body)) for cut in cuts})
    edges = [0, *points, len(body)]
    return [body[start:end] for start, end in itertools.pairwise(edges)]


# -- ASGI -----------------------------------------------------------------------------------------
async def asgi_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    received = b""
    while True:
        message = await receive()
        received += message.get("body", b"")
        if not message.get("more_body", False):
            break
    identity = current_identity()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"x-seen-identity", identity.external_id.encode().hex().encode() if identity else b"-")]})
    await send({"type": "http.response.body", "body": received})


ASGI = IdentityMiddleware(asgi_echo, store=MemoryStore(), max_body_size=LIMIT)
ASGI_1MIB = IdentityMiddleware(asgi_echo, store=MemoryStore())


async def call_asgi(body: bytes, chunks: list[bytes], headers: list[tuple[bytes, bytes]],
                    app: IdentityMiddleware = ASGI) -> tuple[int, dict[bytes, bytes], bytes]:
    messages = [{"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks]
    messages.append({"type": "http.request", "body": b"", "more_body": False})
    replies: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        replies.append(message)

    scope = {"type": "http", "method": "POST", "path": "/chat", "headers": headers, "query_string": b""}
    await app(scope, receive, send)
    start = replies[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in replies[1:])


def _identity_seen(headers: dict[Any, Any], key: Any) -> str | None:
    value = headers.get(key)
    if value in (None, "-", b"-"):
        return None
    return bytes.fromhex(value.decode() if isinstance(value, bytes) else value).decode()


@SETTINGS
@given(body=bodies, cuts=st.lists(st.integers(0, 700), max_size=6), content_type=content_types,
       header=header_values, declare_length=st.booleans())
@pytest.mark.anyio
async def test_asgi_survives_hostile_input(body: bytes, cuts: list[int], content_type: bytes, header: bytes | None,
                                           declare_length: bool) -> None:
    headers = [(b"content-type", content_type)]
    if declare_length:
        headers.append((b"content-length", str(len(body)).encode()))
    if header is not None:
        headers.append((b"x-identity-id", header))
    status, reply_headers, echoed = await call_asgi(body, _chunks(body, cuts), headers)
    assert status in OK
    if status == 200:
        assert echoed == body  # byte for byte, however it was chunked
        if len(body) > LIMIT and header is None:
            assert _identity_seen(reply_headers, b"x-seen-identity") is None  # the limit holds exactly


# -- WSGI -----------------------------------------------------------------------------------------
def wsgi_echo(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    length = environ.get("CONTENT_LENGTH")
    received = environ["wsgi.input"].read(int(length)) if length else environ["wsgi.input"].read()
    identity = current_identity()
    start_response("200 OK", [("X-Seen-Identity", identity.external_id.encode().hex() if identity else "-")])
    return [received]


WSGI = IdentityWSGIMiddleware(wsgi_echo, store=MemoryStore(), max_body_size=LIMIT)


@SETTINGS
@given(body=bodies, content_type=content_types, header=header_values, declare_length=st.booleans())
def test_wsgi_survives_hostile_input(body: bytes, content_type: bytes, header: bytes | None,
                                     declare_length: bool) -> None:
    environ: dict[str, Any] = {"REQUEST_METHOD": "POST", "PATH_INFO": "/chat", "wsgi.input": io.BytesIO(body),
                               "CONTENT_TYPE": content_type.decode("latin-1")}
    if declare_length:
        environ["CONTENT_LENGTH"] = str(len(body))
    else:
        environ["wsgi.input_terminated"] = True  # a chunked request, as servers mark it
    if header is not None:
        environ["HTTP_X_IDENTITY_ID"] = header.decode("latin-1")  # PEP 3333: bytes as latin-1 text
    answered: list[Any] = []
    result = WSGI(environ, lambda status, headers, exc_info=None: answered.append((status, dict(headers))))
    echoed = b"".join(result)
    getattr(result, "close", lambda: None)()
    status, reply_headers = int(answered[0][0].split()[0]), answered[0][1]
    assert status in OK
    if status == 200:
        assert echoed == body
        if len(body) > LIMIT and header is None:
            assert _identity_seen(reply_headers, "X-Seen-Identity") is None


# -- Django ---------------------------------------------------------------------------------------
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(body=bodies, content_type=content_types, header=header_values)
def test_django_survives_hostile_input(body: bytes, content_type: bytes, header: bytes | None) -> None:
    with override_settings(**{**SITE, "IDENTITY_MIDDLEWARE": {"STORE": MemoryStore(), "MAX_BODY_SIZE": LIMIT}}):
        extra = {} if header is None else {"HTTP_X_IDENTITY_ID": header.decode("latin-1")}
        response = Client(raise_request_exception=False).generic(
            "POST", "/echo", data=body, content_type=content_type.decode("latin-1"), **extra)
    assert response.status_code in OK
    if response.status_code == 200:
        assert response.content == body
        if len(body) > LIMIT and header is None:
            assert _identity_seen(response.headers, "X-Seen-Identity") is None


# -- what the cases above found, pinned -----------------------------------------------------------
@pytest.mark.parametrize(("body", "status"), [
    (b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}", 200),  # deeper than the decoder: not JSON to us
    (b'{"identity": 1e309}', 400),
    (b'{"identity": {"id": "u", "metadata": {"n": ' + b"9" * 4301 + b"}}}", 400),
    (b'{"identity": {"id": "\xff\xfe"}}', 400),
])
@pytest.mark.anyio
async def test_hostile_bodies_found_by_the_drill(body: bytes, status: int) -> None:
    found, _, echoed = await call_asgi(body, [body], [(b"content-type", b"application/json")], ASGI_1MIB)
    assert found == status
    if found == 200:
        assert echoed == body


@pytest.mark.anyio
async def test_a_chunked_body_whose_last_chunk_crosses_the_limit_is_not_resolved() -> None:
    body = b'{"identity": {"id": "over"}, "pad": "' + b"x" * LIMIT + b'"}'
    status, headers, echoed = await call_asgi(body, [body[:10], body[10:]], [(b"content-type", b"application/json")])
    assert status == 200 and echoed == body and _identity_seen(headers, b"x-seen-identity") is None


@pytest.mark.parametrize("value", ["¡hola", "用户-1", "👋"])
@pytest.mark.anyio
async def test_header_ids_are_utf8_in_every_shell(value: str) -> None:
    raw = value.encode()
    _, asgi_headers, _ = await call_asgi(b"", [], [(b"x-identity-id", raw)])
    assert _identity_seen(asgi_headers, b"x-seen-identity") == value
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.input": io.BytesIO(b""),
               "HTTP_X_IDENTITY_ID": raw.decode("latin-1")}
    answered: list[Any] = []
    list(WSGI(environ, lambda status, headers, exc_info=None: answered.append(dict(headers))))
    assert _identity_seen(answered[0], "X-Seen-Identity") == value
    with override_settings(**{**SITE, "IDENTITY_MIDDLEWARE": {"STORE": MemoryStore()}}):
        response = Client().post("/echo", HTTP_X_IDENTITY_ID=raw.decode("latin-1"))
    assert _identity_seen(response.headers, "X-Seen-Identity") == value
