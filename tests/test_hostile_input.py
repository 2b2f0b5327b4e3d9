"""Hostile input never breaks the app: no 500 from the middleware, the body reaches the app byte for
byte, the size limit holds exactly however the body is chunked; ASGI, WSGI and Django alike, under
every documented option that reads the body or headers (sources, signing, estimates, limits)."""

from __future__ import annotations

import io
import itertools
import json
import time
from collections.abc import Iterable
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import django_project

django_project.setup()

from django.test import Client, override_settings  # noqa: E402
from flask import Flask  # noqa: E402
from flask import Response as FlaskResponse  # noqa: E402
from flask import request as flask_request  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.requests import Request as StarletteRequest  # noqa: E402
from starlette.responses import Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

from django_project.settings import SITE  # noqa: E402
from identity_middleware import IdentityMiddleware, IdentityWSGIMiddleware, current_identity  # noqa: E402
from identity_middleware.core.signing import sign  # noqa: E402
from identity_middleware.stores import MemoryStore  # noqa: E402

LIMIT = 256  # a small max_body_size, so hypothesis reaches both sides of it
SETTINGS = settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
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


# -- every documented option that reads the body or headers, on every shell -----------------------
KEY = "hostile-signing-key"
OPTIONS: dict[str, dict[str, Any]] = {
    "default": {},
    "small_body": {"max_body_size": LIMIT},
    "user_field": {"sources": ("body", "user_field", "header", "auth")},
    "user_field_first": {"sources": ("user_field", "header"), "require_identity": True},
    "signing_key": {"signing_key": KEY},
    "estimate_auto": {"estimates": {"/": "auto"}},
    "estimate": {"estimates": {"/chat": "0.01", "/echo": "0.01"}},
    "require_identity": {"require_identity": True},
    "over_budget": {"sources": ("user_field", "body", "header"), "estimates": {"/": "0.01"},
                    "default_budgets": {"daily": "0.000000001"}},  # every tracked request: 429
    # all at once, with a budget every estimate exceeds and a rate limit
    "everything": {"sources": ("user_field", "body", "header", "auth"), "signing_key": KEY,
                   "estimates": {"/": "auto"}, "require_identity": True, "max_body_size": 4096,
                   "default_budgets": {"daily": "0.000000001"}, "rate_limit": "1000/second"},
}
OUR_ERRORS = {400: {"invalid_identity"}, 401: {"identity_required", "identity_signature_invalid"},
              429: {"budget_exceeded", "rate_limited"}}

Headers = dict[str, bytes]


async def starlette_echo(request: StarletteRequest) -> Response:
    identity = current_identity()
    return Response(await request.body(), headers={
        "x-seen-identity": identity.external_id.encode().hex() if identity else "-"})


def _starlette(options: dict[str, Any]) -> Starlette:
    return Starlette(routes=[Route("/chat", starlette_echo, methods=["POST"])],
                     middleware=[Middleware(IdentityMiddleware, store=MemoryStore(), **options)])


def _flask(options: dict[str, Any]) -> Flask:
    app = Flask(__name__)

    @app.post("/chat")
    def echo() -> FlaskResponse:
        identity = current_identity()
        return FlaskResponse(flask_request.get_data(),
                             headers={"X-Seen-Identity": identity.external_id.encode().hex() if identity else "-"})

    app.wsgi_app = IdentityWSGIMiddleware(app.wsgi_app, store=MemoryStore(), **options)  # type: ignore[method-assign]
    return app


STARLETTE = {name: _starlette(options) for name, options in OPTIONS.items()}
FLASK = {name: _flask(options) for name, options in OPTIONS.items()}


async def answer_asgi(option: str, body: bytes, headers: Headers) -> tuple[int, bytes]:
    """Status and body of the Starlette app under ``OPTIONS[option]``, called as a server would."""
    status, _, reply = await call_asgi(body, [body], [(name.encode(), value) for name, value in headers.items()],
                                       STARLETTE[option])  # type: ignore[arg-type]
    return status, reply


def answer_wsgi(option: str, body: bytes, headers: Headers) -> tuple[int, bytes]:
    """Status and body of the Flask app under ``OPTIONS[option]``, called as a WSGI server would."""
    environ: dict[str, Any] = {"REQUEST_METHOD": "POST", "PATH_INFO": "/chat", "SERVER_NAME": "test",
                               "SERVER_PORT": "80", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
                               "CONTENT_LENGTH": str(len(body))}
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value.decode("latin-1")
    answered: list[str] = []
    result = FLASK[option](environ, lambda status, headers, exc_info=None: answered.append(status))
    reply = b"".join(result)
    getattr(result, "close", lambda: None)()
    return int(answered[0].split()[0]), reply


def answer_django(option: str, body: bytes, headers: Headers) -> tuple[int, bytes]:
    """Status and body of the test site's echo view under ``OPTIONS[option]`` as Django settings."""
    settings_ = {"STORE": MemoryStore(), **{name.upper(): value for name, value in OPTIONS[option].items()}}
    extra = {f"HTTP_{name.upper().replace('-', '_')}": value.decode("latin-1")
             for name, value in headers.items() if name != "content-type"}
    with override_settings(**{**SITE, "IDENTITY_MIDDLEWARE": settings_}):
        response = Client(raise_request_exception=False).generic(
            "POST", "/echo", data=body, content_type=headers.get("content-type", b"").decode("latin-1"), **extra)
    return response.status_code, response.content


def _is_ours_or_the_apps(status: int, reply: bytes, body: bytes) -> bool:
    """The app's answer (its echo of the body, byte for byte), or one of our pinned 4xx errors."""
    if status == 200:
        return reply == body
    return json.loads(reply)["error"]["type"] in OUR_ERRORS.get(status, set())


def _closed_deep(depth: int, opener: bytes) -> bytes:
    return opener * depth + (b"]" if opener == b"[" else b"}") * depth


deep_values = st.builds(_closed_deep, st.integers(900, 6000), st.sampled_from([b"[", b'{"a":']))
hostile_values = st.one_of(identity_values, deep_values,
                           st.sampled_from([b'"\xff\xfe"', b'"\\ud800"', b'"a\\u0000b"', b'" "', b'""', b"[]",
                                            b'"' + b"x" * 300 + b'"', b"-" + b"9" * 400, b"1e400", b"true"]))
user_field_bodies = st.one_of(
    st.builds(lambda field, value: b'{"' + field + b'": ' + value + b"}",
              st.sampled_from([b"user", b"safety_identifier", b"metadata", b"identity"]), hostile_values),
    st.builds(lambda value: b'{"metadata": {"user_id": ' + value + b"}}", hostile_values),
    st.builds(lambda value, user: b'{"a": ' + value + b', "user": "' + user + b'"}', deep_values,
              st.sampled_from([b"u1", b"\xff", b""])),
)
estimate_bodies = st.builds(
    lambda model, cap, field, prompt: b'{"model": ' + model + b', "' + field + b'": ' + cap + b', "messages": '
    + prompt + b"}",
    st.sampled_from([b'"gpt-4o"', b'"claude-3-5-sonnet-latest"', b'"unknown-model"', b"1e400", b'"\xff"']),
    st.sampled_from([b"1000", b"18446744073709551615", b"1" * 4301, b"-5", b"1e400", b"0.5"]),
    st.sampled_from([b"max_tokens", b"max_completion_tokens", b"max_output_tokens"]),
    st.one_of(deep_values, st.just(b'[{"role": "user", "content": "hi"}]')),
)
any_body = st.one_of(bodies, user_field_bodies, estimate_bodies)
NOW = b"{now}"  # in a signature: the current Unix time, filled in when the request is sent
ascii_ids = st.text("abcxyz019_-", min_size=1, max_size=12)
signatures = st.one_of(
    st.just(b"valid"),  # replaced by a fresh, valid signature of the header's id
    st.builds(lambda sign_, digits, mac: b"t=" + sign_ + digits + b",v1=" + mac, st.sampled_from([b"", b"-", b"+"]),
              st.sampled_from([NOW, b"9" * 400, b"1" * 16, b"", b"0", b"1" * 5000, "٣".encode()]),
              st.sampled_from([b"\xc3\xa9", b"00", b"a" * 64, b"\xff" * 64, b""])),
    header_values.filter(lambda value: value is not None),
)


def _headers(content_type: bytes, identity: str | bytes | None, signature: bytes | None) -> Headers:
    headers: Headers = {"content-type": content_type}
    if identity is not None:
        headers["x-identity-id"] = identity.encode() if isinstance(identity, str) else identity
    if signature == b"valid":
        headers["x-identity-signature"] = sign(KEY, identity or "", time.time()).encode() \
            if isinstance(identity, str) else b"t=0,v1=00"
    elif signature is not None:
        headers["x-identity-signature"] = _now(signature)
    return headers


def _now(value: bytes) -> bytes:
    """``value`` with :data:`NOW` replaced by the current Unix time (a signature's fresh timestamp)."""
    return value.replace(NOW, str(int(time.time())).encode())


requests = st.fixed_dictionaries({
    "option": st.sampled_from(sorted(OPTIONS)),
    "body": any_body,
    "content_type": content_types,
    "identity": st.one_of(st.none(), ascii_ids, header_values),
    "signature": st.one_of(st.none(), signatures),
})
SHELLS = ("starlette", "flask", "django")


def answer(shell: str, option: str, body: bytes, headers: Headers) -> tuple[int, bytes]:
    """Status and body of ``shell``'s app under ``OPTIONS[option]``."""
    if shell == "starlette":
        return anyio.run(answer_asgi, option, body, headers)
    return (answer_wsgi if shell == "flask" else answer_django)(option, body, headers)


@pytest.mark.parametrize("shell", SHELLS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests)
def test_every_shell_answers_the_app_or_a_4xx_under_every_option(shell: str, request: dict[str, Any]) -> None:
    body = request["body"]
    status, reply = answer(shell, request["option"], body,
                           _headers(request["content_type"], request["identity"], request["signature"]))
    assert _is_ours_or_the_apps(status, reply, body), (status, reply[:200])


# -- what the drill under documented options found, pinned on every shell --------------------------
DEEP = _closed_deep(5000, b"[")
JSON = b"application/json"


@pytest.mark.parametrize(("option", "body", "headers", "status"), [
    ("signing_key", b"", {"x-identity-id": b"u", "x-identity-signature": b"t=" + b"9" * 400 + b",v1=00"}, 401),
    ("signing_key", b"", {"x-identity-id": b"u", "x-identity-signature": b"t=-" + b"9" * 400 + b",v1=00"}, 401),
    ("signing_key", b"", {"x-identity-id": b"u", "x-identity-signature": b"t=" + NOW + b",v1=\xc3\xa9"}, 401),
    ("user_field", b'{"user": 1e400}', {}, 400),
    ("user_field", b'{"user": ' + b"9" * 4301 + b"}", {}, 400),
    ("user_field", b'{"user": "\xff\xfe"}', {}, 400),
    ("user_field", b'{"metadata": {"user_id": "\xff"}}', {}, 400),
    ("user_field", b'{"a": ' + DEEP + b', "user": "u1"}', {}, 200),  # deeper than we read: not JSON to us
    ("user_field", b'{"user": ' + DEEP + b"}", {"x-identity-id": b"from-header"}, 200),
    ("estimate_auto", b'{"model": "gpt-4o", "max_tokens": 10, "messages": ' + DEEP + b"}",
     {"x-identity-id": b"u"}, 200),
])
@pytest.mark.parametrize("shell", SHELLS)
def test_hostile_input_under_documented_options_found_by_the_drill(
        shell: str, option: str, body: bytes, headers: Headers, status: int) -> None:
    found, reply = answer(shell, option, body,
                          {"content-type": JSON, **{name: _now(value) for name, value in headers.items()}})
    assert found == status
    assert _is_ours_or_the_apps(found, reply, body)
