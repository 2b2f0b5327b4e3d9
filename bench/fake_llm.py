"""A fast stand-in for an LLM API: any POST gets the same OpenAI chat completion, usage included.

    python -m bench.fake_llm --port 7002

A raw asyncio protocol, not a web framework, so that it costs the bench little CPU: it parses just
enough HTTP/1.1 (the header block and ``Content-Length``), keeps connections alive and answers
pipelined requests in order. It runs in a process of its own, not on the app's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import cast

from . import aio

MODEL = "gpt-4o-mini"
PROMPT_TOKENS = 120
COMPLETION_TOKENS = 40

COMPLETION = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1767225600, "model": MODEL,
    "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None, "message": {
        "role": "assistant", "refusal": None,
        "content": "It will be sunny in Lisbon tomorrow, 24 °C at noon, with a light breeze from the north."}}],
    "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
              "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
              "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}},
    "system_fingerprint": "fp_bench",
}, ensure_ascii=False).encode()

RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
            b"Content-Length: " + str(len(COMPLETION)).encode() + b"\r\n\r\n" + COMPLETION)
_BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _Completions(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        answers: list[bytes] = []
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            length = _content_length(self.buffer[:end])
            if length is None:
                self.transport.write(b"".join(answers) + _BAD)
                self.transport.close()
                return
            if len(self.buffer) < end + 4 + length:
                break  # the body is still coming
            self.buffer = self.buffer[end + 4 + length:]
            answers.append(RESPONSE)
        if answers:
            self.transport.write(b"".join(answers))


def _content_length(head: bytes) -> int | None:
    """The request's body length (0 without the header); ``None`` for a chunked or malformed request."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            return int(value) if value.strip().isdigit() else None
        if name == b"transfer-encoding":
            return None
    return 0


async def serve(port: int) -> asyncio.Server:
    return await asyncio.get_running_loop().create_server(_Completions, "127.0.0.1", port, backlog=1024)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True, help="where to listen on 127.0.0.1")
    args = parser.parse_args(argv)
    aio.serve_until_stopped(lambda: serve(args.port))


if __name__ == "__main__":
    main()
