"""An HTTP endpoint on 127.0.0.1 receiving budget alerts: each POST's JSON body and its signature header."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

Received = list[tuple[dict[str, object], str | None]]  # (event, X-Identity-Signature)


@contextmanager
def alert_receiver() -> Iterator[tuple[str, Received]]:
    """``(url, received)``: the URL to give as a notifier, and what was POSTed to it so far."""
    received: Received = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append((json.loads(body), self.headers.get("X-Identity-Signature")))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()
