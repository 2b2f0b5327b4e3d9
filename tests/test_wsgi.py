"""IdentityWSGIMiddleware under PEP 3333: body replay, resolution, gating, metering and streaming."""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.util import setup_testing_defaults

import pytest

from identity_middleware import Budget, IdentityInput, current_identity, record_usage
from identity_middleware.stores import Store
from identity_middleware.wsgi import ENVIRON_KEY, IdentityWSGIMiddleware, MeteredIterable
from waiting import wait_until

KINDS = ("memory", "redis")
Environ = dict[str, Any]
App = Callable[[Environ, Callable[..., Any]], Iterable[bytes]]


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, make_store: Callable[..., Store]) -> Store:
    return make_store(str(request.param))


# -- apps -----------------------------------------------------------------------------------------
def echo_app(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
    """Answers the body it was given and who the request belongs to."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else environ["wsgi.input"].read()
    identity = current_identity()
    seen = environ.get(ENVIRON_KEY)
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("X-Identity", identity.external_id if identity else "-"),
                              ("X-Environ-Identity", seen.external_id if seen else "-")])
    return [body]


def usage_app(cost: str, status: str = "200 OK") -> App:
    def app(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
        record_usage(cost, input_tokens=3, output_tokens=4, model="stand-in")
        start_response(status, [("Content-Type", "text/plain")])
        return [b"ok"]

    return app


class Closing:
    """A response iterable that counts its ``close()`` calls."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = 0

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        self.closed += 1


# -- calling a WSGI app directly, as a server would ------------------------------------------------
def call(app: Any, *, body: bytes = b"", content_type: str | None = None, headers: dict[str, str] | None = None,
         environ: Environ | None = None, close: bool = True) -> tuple[str, dict[str, str], bytes]:
    env: Environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "wsgi.input": io.BytesIO(body),
                    "CONTENT_LENGTH": str(len(body))}
    if content_type:
        env["CONTENT_TYPE"] = content_type
    for name, value in (headers or {}).items():
        env["HTTP_" + name.upper().replace("-", "_")] = value
    env.update(environ or {})
    setup_testing_defaults(env)
    started: list[Any] = []

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started[:] = [status, dict(response_headers)]
        return lambda data: None

    result = app(env, start_response)
    try:
        data = b"".join(result)
    finally:
        if close and hasattr(result, "close"):
            result.close()
    return started[0], started[1], data


def error_body(data: bytes) -> dict[str, Any]:
    return dict(json.loads(data)["error"])


# -- a real server ----------------------------------------------------------------------------------
class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Callable[[Any], int]]:
    """``serve(app) -> port``: the app behind ``wsgiref.simple_server`` on a free loopback port."""
    servers: list[WSGIServer] = []

    def start(app: Any) -> int:
        server = make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return int(server.server_port)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def post(port: int, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


# -- the body ----------------------------------------------------------------------------------------
def test_json_body_is_replayed_byte_for_byte_over_http(store: Store, serve: Callable[[Any], int]) -> None:
    body = '{"identity": {"id": "ann", "display_name": "Ann É"},  "messages": [1, 2.50, "ü"]}\n'.encode()
    port = serve(IdentityWSGIMiddleware(echo_app, store=store))
    status, headers, data = post(port, body, {"Content-Type": "application/json; charset=utf-8"})
    assert (status, data) == (200, body)
    assert headers["X-Identity"] == headers["X-Environ-Identity"] == "ann"
    assert store.retrieve("ann").display_name == "Ann É"


def test_body_larger_than_the_limit_passes_unread_and_the_header_names_the_identity(
        store: Store, serve: Callable[[Any], int]) -> None:
    body = json.dumps({"identity": {"id": "body-id"}, "pad": "x" * 5000}).encode()
    port = serve(IdentityWSGIMiddleware(echo_app, store=store, max_body_size=1000))
    status, headers, data = post(port, body, {"Content-Type": "application/json", "X-Identity-Id": "hdr"})
    assert (status, data) == (200, body)
    assert headers["X-Identity"] == "hdr"


def test_a_lying_content_length_gives_the_app_what_came_without_hanging(
        store: Store, serve: Callable[[Any], int]) -> None:
    port = serve(IdentityWSGIMiddleware(echo_app, store=store))
    sent = b'{"identity": {"id": "liar"}}'
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"POST / HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 500\r\n\r\n" + sent)
        raw.shutdown(socket.SHUT_WR)  # the client stops short of what it announced
        reply = b""
        while chunk := raw.recv(65536):
            reply += chunk
    head, _, data = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200")
    assert data == sent
    assert b"X-Identity: liar" in head


def test_never_reads_past_content_length() -> None:
    class Strict(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            assert size is not None and 0 <= size <= 27 - self.tell(), "read past CONTENT_LENGTH"
            return super().read(size)

    body = b'{"identity": {"id": "st"}}\n'  # 27 bytes; the stream holds more that must stay unread
    app = IdentityWSGIMiddleware(echo_app)
    status, headers, data = call(app, content_type="application/json",
                                 environ={"wsgi.input": Strict(body + b"NEXT REQUEST"), "CONTENT_LENGTH": "27"})
    assert (status, data, headers["X-Identity"]) == ("200 OK", body, "st")


def test_an_input_that_hands_over_less_than_asked_is_read_to_the_length() -> None:
    class Trickle(io.BytesIO):  # a socket-backed input may answer read(n) with fewer bytes
        def read(self, size: int | None = -1) -> bytes:
            assert size is not None and 0 <= size <= 40 - self.tell(), "read past CONTENT_LENGTH"
            return super().read(min(size, 7))

    body = b'{"identity": {"id": "slow"}, "x": "abc"}'  # 40 bytes
    app = IdentityWSGIMiddleware(echo_app)
    status, headers, data = call(app, content_type="application/json",
                                 environ={"wsgi.input": Trickle(body + b"NEXT"), "CONTENT_LENGTH": "40"})
    assert (status, data, headers["X-Identity"]) == ("200 OK", body, "slow")


def test_without_a_length_nothing_is_read_unless_the_input_is_terminated() -> None:
    body = b'{"identity": {"id": "chunky"}}'
    app = IdentityWSGIMiddleware(echo_app)
    _, headers, data = call(app, content_type="application/json", environ={
        "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": ""})
    assert headers["X-Identity"] == "-"
    assert data == body  # untouched: the app reads the original stream
    _, headers, data = call(app, content_type="application/json", environ={
        "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": "", "wsgi.input_terminated": True})
    assert (headers["X-Identity"], data) == ("chunky", body)


def test_a_terminated_body_over_the_limit_is_replayed_ahead_of_the_rest() -> None:
    body = json.dumps({"identity": {"id": "big"}, "pad": "y" * 300}).encode() + b"\nline two\n"
    seen: list[bytes] = []

    def app(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
        stream = environ["wsgi.input"]
        seen.append(stream.readline() + stream.read(5) + b"".join(stream))
        start_response("200 OK", [])
        return []

    wrapped = IdentityWSGIMiddleware(app, max_body_size=100, header_names=["X-Who"])
    call(wrapped, content_type="application/json", headers={"X-Who": "w"},
         environ={"wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": "", "wsgi.input_terminated": True})
    assert seen == [body]


def test_non_json_bodies_reach_the_app_untouched() -> None:
    stream = io.BytesIO(b"identity=x")
    received: list[Any] = []

    def app(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
        received.append(environ["wsgi.input"])
        start_response("200 OK", [])
        return []

    call(IdentityWSGIMiddleware(app), content_type="application/x-www-form-urlencoded",
         environ={"wsgi.input": stream, "CONTENT_LENGTH": "10"})
    assert received == [stream] and stream.tell() == 0


# -- resolution and validation -----------------------------------------------------------------------
def test_body_beats_header_beats_remote_user_beats_resolver(store: Store) -> None:
    app = IdentityWSGIMiddleware(echo_app, store=store, resolver=lambda environ: "from-resolver")
    body = b'{"identity": {"id": "from-body"}}'
    header = {"X-Identity-Id": "from-header"}
    remote = {"REMOTE_USER": "from-remote"}
    assert call(app, body=body, content_type="application/json", headers=header, environ=remote)[1][
        "X-Identity"] == "from-body"
    assert call(app, headers=header, environ=remote)[1]["X-Identity"] == "from-header"
    assert call(app, environ=remote)[1]["X-Identity"] == "from-remote"
    assert call(app)[1]["X-Identity"] == "from-resolver"
    assert call(app, headers={"X-ORQ-IDENTITY-ID": "orq"})[1]["X-Identity"] == "orq"
    assert store.retrieve("from-header").display_name is None  # a header tags, never updates


def test_invalid_identity_is_400_naming_the_field_and_the_app_is_not_called(store: Store) -> None:
    calls: list[int] = []

    def app(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
        calls.append(1)
        start_response("200 OK", [])
        return []

    wrapped = IdentityWSGIMiddleware(app, store=store)
    status, headers, data = call(wrapped, body=b'{"identity": {"id": "a", "email": "nope"}}',
                                 content_type="application/json")
    assert status.startswith("400") and headers["content-type"] == "application/json"
    assert error_body(data)["type"] == "invalid_identity" and error_body(data)["field"] == "email"
    status, _, data = call(wrapped, headers={"X-Identity-Id": "bad\x01id"})
    assert status.startswith("400") and error_body(data)["field"] == "X-Identity-Id"
    assert calls == []


def test_no_identity_passes_untracked_or_is_401_when_required(store: Store) -> None:
    status, headers, _ = call(IdentityWSGIMiddleware(echo_app, store=store))
    assert (status, headers["X-Identity"], headers["X-Environ-Identity"]) == ("200 OK", "-", "-")
    status, _, data = call(IdentityWSGIMiddleware(echo_app, store=store, require_identity=True))
    assert status.startswith("401") and error_body(data)["type"] == "identity_required"


# -- budgets and metering ---------------------------------------------------------------------------
def test_spend_exactly_at_the_budget_blocks_with_429_and_retry_after(store: Store) -> None:
    store.create(IdentityInput(id="spender"))
    store.set_budget("spender", Budget(period="daily", amount=Decimal("0.30")))
    app = IdentityWSGIMiddleware(usage_app("0.1"), store=store)
    for _ in range(3):
        assert call(app, headers={"X-Identity-Id": "spender"})[0] == "200 OK"
    status, headers, data = call(app, headers={"X-Identity-Id": "spender"})
    assert status.startswith("429")
    assert int(headers["retry-after"]) > 0
    error = error_body(data)
    assert (error["type"], error["period"], error["amount"], error["spent"]) == (
        "budget_exceeded", "daily", "0.30", "0.30")


def test_costs_are_summed_exactly_and_each_request_counted_once(store: Store) -> None:
    app = IdentityWSGIMiddleware(usage_app("0.0000001"), store=store)
    for _ in range(30):
        call(app, headers={"X-Identity-Id": "exact"})
    metrics = store.metrics("exact")
    assert metrics.total_cost == Decimal("0.000003")
    assert (metrics.total_requests, metrics.total_tokens, metrics.total_errors) == (30, 210, 0)


def test_status_400_and_above_counts_an_error(store: Store) -> None:
    call(IdentityWSGIMiddleware(usage_app("0.01", "404 Not Found"), store=store), headers={"X-Identity-Id": "e4"})
    metrics = store.metrics("e4")
    assert (metrics.total_requests, metrics.total_errors, metrics.total_cost) == (1, 1, Decimal("0.01"))


def test_an_exception_from_the_app_commits_an_error_once(store: Store) -> None:
    def app(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
        record_usage("0.02")
        raise RuntimeError("model down")

    with pytest.raises(RuntimeError):
        call(IdentityWSGIMiddleware(app, store=store), headers={"X-Identity-Id": "boom"})
    metrics = store.metrics("boom")
    assert (metrics.total_requests, metrics.total_errors, metrics.total_cost) == (1, 1, Decimal("0.02"))


def test_a_generator_is_metered_while_iterated_and_settled_once_on_close(store: Store) -> None:
    identities: list[str | None] = []

    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        for part in (b"a", b"b", b"c"):
            who = current_identity()
            identities.append(who.external_id if who else None)
            record_usage("0.001", output_tokens=1)
            yield part

    status, _, data = call(IdentityWSGIMiddleware(app, store=store), headers={"X-Identity-Id": "gen"})
    assert (status, data) == ("200 OK", b"abc")
    assert identities == ["gen", "gen", "gen"]
    assert current_identity() is None  # nothing leaks out of the request
    metrics = store.metrics("gen")
    assert (metrics.total_requests, metrics.total_cost, metrics.output_tokens) == (1, Decimal("0.003"), 3)


def test_an_exception_while_iterating_is_an_error_and_the_inner_close_still_runs(store: Store) -> None:
    class Failing(Closing):
        def __iter__(self) -> Iterator[bytes]:
            record_usage("0.05")
            raise ValueError("stream broke")

    inner = Failing([])

    def app(environ: Environ, start_response: Callable[..., Any]) -> Closing:
        start_response("200 OK", [])
        return inner

    with pytest.raises(ValueError):
        call(IdentityWSGIMiddleware(app, store=store), headers={"X-Identity-Id": "broke"})
    assert inner.closed == 1
    metrics = store.metrics("broke")
    assert (metrics.total_requests, metrics.total_errors, metrics.total_cost) == (1, 1, Decimal("0.05"))


def test_an_abandoned_response_is_settled_when_the_server_closes_it(store: Store) -> None:
    inner = Closing([b"x", b"y"])

    def app(environ: Environ, start_response: Callable[..., Any]) -> Closing:
        record_usage("0.07")
        start_response("200 OK", [])
        return inner

    environ: Environ = {"REQUEST_METHOD": "GET", "HTTP_X_IDENTITY_ID": "gone", "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    start_response: Any = lambda status, headers, exc_info=None: None  # noqa: E731
    result = IdentityWSGIMiddleware(app, store=store)(environ, start_response)
    iterator = iter(result)
    assert next(iterator) == b"x"
    assert store.metrics("gone").total_requests == 0  # nothing is committed before the end
    assert isinstance(result, MeteredIterable)
    result.close()
    result.close()  # a second close changes nothing
    assert inner.closed == 1
    metrics = store.metrics("gone")
    assert (metrics.total_requests, metrics.total_cost) == (1, Decimal("0.07"))


def test_streaming_over_http_commits_after_the_last_chunk(store: Store, serve: Callable[[Any], int]) -> None:
    def app(environ: Environ, start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        for index in range(5):
            record_usage("0.0000001", output_tokens=1)
            yield f"chunk{index}\n".encode()

    port = serve(IdentityWSGIMiddleware(app, store=store))
    status, _, data = post(port, b'{"identity": {"id": "streamer"}}', {"Content-Type": "application/json"})
    assert status == 200 and data.count(b"chunk") == 5
    wait_until(lambda: store.metrics("streamer").total_requests == 1, "the stream settled")
    metrics = store.metrics("streamer")
    assert (metrics.total_cost, metrics.output_tokens) == (Decimal("0.0000005"), 5)


def test_a_path_estimate_is_reserved_and_blocks_when_it_does_not_fit(store: Store) -> None:
    store.create(IdentityInput(id="est"))
    store.set_budget("est", Budget(period="monthly", amount=Decimal("1.00")))
    store.record("est", cost=Decimal("0.60"))
    app = IdentityWSGIMiddleware(usage_app("0.01"), store=store, estimates={"/llm": "0.50"})
    status, _, data = call(app, headers={"X-Identity-Id": "est"}, environ={"PATH_INFO": "/llm/chat"})
    assert status.startswith("429") and error_body(data)["period"] == "monthly"
    assert call(app, headers={"X-Identity-Id": "est"}, environ={"PATH_INFO": "/other"})[0] == "200 OK"


def test_rate_limited_requests_get_429_with_retry_after(store: Store) -> None:
    app = IdentityWSGIMiddleware(usage_app("0"), store=store, rate_limit="2/minute")
    for _ in range(2):
        assert call(app, headers={"X-Identity-Id": "rl"})[0] == "200 OK"
    status, headers, data = call(app, headers={"X-Identity-Id": "rl"})
    assert status.startswith("429") and error_body(data)["type"] == "rate_limited"
    assert int(headers["retry-after"]) >= 1
