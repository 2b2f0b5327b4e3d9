"""A local HTTP server speaking the OpenAI (chat completions, Responses) and Anthropic (messages)
wire formats, JSON and SSE, with the shapes the providers send; the real SDKs are pointed at it.

The reply is decided by the request's ``model``: ``"fail"`` answers a 400 error, ``"slow-*"``
streams many chunks (to stop early). Every request's JSON body is kept in ``requests``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHUNKS = 3
SLOW_CHUNKS = 200
# Usage the fake provider reports, per API (the shapes of recorded replies).
CHAT_USAGE = {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
              "prompt_tokens_details": {"cached_tokens": 1000, "audio_tokens": 0},
              "completion_tokens_details": {"reasoning_tokens": 100, "audio_tokens": 0,
                                            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
RESPONSES_USAGE = {"input_tokens": 800, "output_tokens": 200, "total_tokens": 1000,
                   "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
ANTHROPIC_USAGE = {"input_tokens": 50, "output_tokens": 20, "cache_creation_input_tokens": 300,
                   "cache_read_input_tokens": 1000, "service_tier": "standard"}


def _chat_completion(model: str) -> dict[str, Any]:
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": "Hello!", "refusal": None}}],
            "usage": CHAT_USAGE, "service_tier": "default", "system_fingerprint": "fp_fake"}


def _chat_chunks(model: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "system_fingerprint": "fp_fake"}
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    extra = {"usage": None} if include_usage else {}
    count = SLOW_CHUNKS if model.startswith("slow-") else CHUNKS
    yield {**base, **extra, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                         "logprobs": None, "finish_reason": None}]}
    for index in range(count):
        yield {**base, **extra, "choices": [{"index": 0, "delta": {"content": f"w{index} "}, "logprobs": None,
                                             "finish_reason": None}]}
    yield {**base, **extra, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]}
    if include_usage:
        yield {**base, "choices": [], "usage": CHAT_USAGE}


def _response(model: str, status: str = "completed", response_id: str = "") -> dict[str, Any]:
    return {"id": response_id or f"resp_{uuid.uuid4().hex}", "object": "response", "created_at": int(time.time()),
            "status": status, "model": model, "output": [{"type": "message", "id": "msg_fake", "status": "completed",
                                        "role": "assistant", "content": [{"type": "output_text", "text": "Hello!",
                                                                          "annotations": []}]}],
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "error": None,
            "incomplete_details": None, "instructions": None, "metadata": {}, "temperature": 1.0, "top_p": 1.0,
            "usage": RESPONSES_USAGE if status == "completed" else None}


def _response_events(model: str) -> Iterator[tuple[str, dict[str, Any]]]:
    response_id = f"resp_{uuid.uuid4().hex}"
    yield "response.created", {"type": "response.created", "sequence_number": 0,
                               "response": {**_response(model, "in_progress", response_id), "output": []}}
    count = SLOW_CHUNKS if model.startswith("slow-") else CHUNKS
    for index in range(count):
        yield "response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": index + 1,
                                             "item_id": "msg_fake", "output_index": 0, "content_index": 0,
                                             "delta": f"w{index} ", "logprobs": []}
    yield "response.completed", {"type": "response.completed", "sequence_number": count + 1,
                                 "response": _response(model, "completed", response_id)}


def _message(model: str) -> dict[str, Any]:
    return {"id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "Hello!"}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": ANTHROPIC_USAGE}


def _message_events(model: str) -> Iterator[tuple[str, dict[str, Any]]]:
    start = {**_message(model), "content": [], "stop_reason": None,
             "usage": {**ANTHROPIC_USAGE, "output_tokens": 1}}
    yield "message_start", {"type": "message_start", "message": start}
    yield "content_block_start", {"type": "content_block_start", "index": 0,
                                  "content_block": {"type": "text", "text": ""}}
    count = SLOW_CHUNKS if model.startswith("slow-") else CHUNKS
    for index in range(count):
        yield "content_block_delta", {"type": "content_block_delta", "index": 0,
                                      "delta": {"type": "text_delta", "text": f"w{index} "}}
    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    yield "message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                            "usage": {"output_tokens": ANTHROPIC_USAGE["output_tokens"]}}
    yield "message_stop", {"type": "message_stop"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ProviderServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        self.server.requests.append(body)
        model = str(body.get("model", ""))
        if model == "fail":
            error = {"error": {"type": "invalid_request_error", "message": "no such model", "code": None,
                               "param": "model"}}
            if self.path.endswith("/messages"):
                error = {"type": "error", "error": {"type": "invalid_request_error", "message": "no such model"}}
            return self._json(400, error)
        stream = body.get("stream") is True
        if self.path.endswith("/chat/completions"):
            if stream:
                return self._sse((None, chunk) for chunk in _chat_chunks(model, body))
            return self._json(200, _chat_completion(model))
        if self.path.endswith("/responses"):
            return self._sse(_response_events(model)) if stream else self._json(200, _response(model))
        if self.path.endswith("/messages"):
            return self._sse(_message_events(model)) if stream else self._json(200, _message(model))
        self._json(404, {"error": {"message": "not found"}})

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, events: Iterator[tuple[str | None, dict[str, Any]]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for name, payload in events:
                text = (f"event: {name}\n" if name else "") + f"data: {json.dumps(payload)}\n\n"
                self._chunk(text.encode())
            if self.path.endswith("/chat/completions"):
                self._chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.server.disconnects += 1

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


class ProviderServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.disconnects = 0
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> ProviderServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()
        self.server_close()
