"""The sync socket path as a protocol: the bytes it writes and how it reads what comes back, against a
server of canned replies on a unix socket (no Redis: the server says exactly what a test needs)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.exceptions as errors

from identity_middleware.stores.redis.accelerated.resp import LOAD_SCRIPTS, SCRIPT_COUNT, Endpoint, pack
from identity_middleware.stores.redis.accelerated.wire import SyncDirect

GET_A, GET_B = pack(("GET", "a")), pack(("GET", "b"))


class Canned:
    """A server that, on each connection, reads what each step expects and answers its chunks
    (one ``sendall`` each); after a step with no chunks it waits for the client to hang up and
    serves the next steps on the next connection."""

    def __init__(self, path: Path, steps: list[tuple[bytes, list[bytes]]]) -> None:
        self.steps = list(steps)
        self.received: list[bytes] = []  # per connection, everything read
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.steps:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                self.received.append(b"")
                self._answer(connection)

    def _answer(self, connection: socket.socket) -> None:
        wanted = 0
        while self.steps:
            expected, chunks = self.steps.pop(0)
            wanted += len(expected)
            while len(self.received[-1]) < wanted:
                data = connection.recv(65536)
                if not data:
                    return
                self.received[-1] += data
            for chunk in chunks:
                connection.sendall(chunk)
            if not chunks:  # silent: until the client hangs up
                while connection.recv(65536):
                    pass
                return

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def sock_path(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "canned.sock"


def direct(path: Path, timeout: float = 5.0) -> SyncDirect:
    return SyncDirect(Endpoint(str(path), "", 0, 0, None, None, timeout, 5.0))


def serve(path: Path, steps: list[tuple[bytes, list[bytes]]]) -> Canned:
    return Canned(path, steps)


def test_a_batch_goes_out_in_one_write_and_replies_split_across_reads_come_back_in_order(sock_path: Path) -> None:
    server = serve(sock_path, [(GET_A + GET_B, [b"$5\r\nhel", b"lo\r\n:4", b"2\r\n"])])
    try:
        assert direct(sock_path).call_many([GET_A, GET_B]) == ["hello", 42]
        assert server.received == [GET_A + GET_B]
    finally:
        server.close()


def test_an_error_reply_stands_in_the_place_of_its_command(sock_path: Path) -> None:
    server = serve(sock_path, [(GET_A + GET_B, [b"-WRONGTYPE no\r\n+OK\r\n"])])
    try:
        wrong, right = direct(sock_path).call_many([GET_A, GET_B])
        assert isinstance(wrong, errors.ResponseError) and right == "OK"
    finally:
        server.close()


def test_a_noscript_reply_loads_every_script_and_sends_the_command_again(sock_path: Path) -> None:
    loaded = b"$2\r\nok\r\n" * SCRIPT_COUNT
    server = serve(sock_path, [(GET_A, [b"-NOSCRIPT No matching script\r\n"]),
                               (LOAD_SCRIPTS + GET_A, [loaded + b":7\r\n"])])
    try:
        assert direct(sock_path).call(GET_A) == 7
        assert server.received == [GET_A + LOAD_SCRIPTS + GET_A]  # the loads and the command in one write
    finally:
        server.close()


def test_a_connection_that_timed_out_is_never_used_again(sock_path: Path) -> None:
    server = serve(sock_path, [(GET_A, []), (GET_B, [b":2\r\n"])])
    client = direct(sock_path, timeout=0.2)
    try:
        with pytest.raises(errors.TimeoutError):
            client.call(GET_A)  # no reply, ever: its late reply must not be read as the next one's
        assert client.call(GET_B) == 2
        assert server.received == [GET_A, GET_B]  # two connections
    finally:
        server.close()
