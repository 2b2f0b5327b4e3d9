"""The README's first command: the FastAPI example shows identities, spend and a budget 429."""

from __future__ import annotations

import gc
import importlib
import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from example_server import ENV, SERVE_EXAMPLE, STOP_EXAMPLE
from identity_middleware.context import Untracked, bind, unbind
from leaving_client import leave_after_first_chunk

ROOT = Path(__file__).resolve().parent.parent


def test_the_fastapi_demo_tracks_identities_and_answers_429() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "fastapi_app" / "demo.py")],
                            capture_output=True, text=True, timeout=120, env=ENV)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "alice (body identity) call 1       -> 200" in out
    assert "-> 429  budget_exceeded" in out
    assert "bob (X-Identity-Id header)         -> 200" in out
    assert "-> 401  identity_required" in out
    assert "-> 400" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  alice ")
            or line.startswith("  bob ")}
    assert rows["alice"][1:3] == ["4", "50%"]  # 4 requests, the 2 refused ones count as errors
    assert rows["bob"][1] == "1"


# The openai SDK as the example's client, over a real socket, in a child process (the example's
# modules are top-level `app` and `model`, as when it is run).
SDK_SCRIPT = SERVE_EXAMPLE + """
import json, openai
from app import store
client = openai.OpenAI(api_key="unused", base_url=f"http://127.0.0.1:{port}/v1",
                       default_headers={"X-Identity-Id": "carol"})
ask = [{"role": "user", "content": "Hello there"}]
completion = client.chat.completions.create(model="local-stand-in-1", messages=ask)
plain = list(client.chat.completions.create(model="local-stand-in-1", messages=ask, stream=True))
usage = list(client.chat.completions.create(model="local-stand-in-1", messages=ask, stream=True,
                                            stream_options={"include_usage": True}))
plain_client = openai.OpenAI(api_key="unused", base_url=f"http://127.0.0.1:{port}/v1")
by_user = plain_client.chat.completions.create(model="local-stand-in-1", messages=ask, user="dave")
by_safety = plain_client.chat.completions.create(model="local-stand-in-1", messages=ask, safety_identifier="erin")
deadline = time.monotonic() + 10  # a stream is settled just after its last byte reached the client
def settled():
    return (store.metrics("carol").total_requests >= 3 and store.metrics("dave").total_requests >= 1
            and store.metrics("erin").total_requests >= 1)
while not settled() and time.monotonic() < deadline:
    time.sleep(0.02)
metrics = store.metrics("carol")
print(json.dumps({
    "created": completion.created, "total_tokens": completion.usage.total_tokens,
    "text": "".join(c.choices[0].delta.content or "" for c in plain if c.choices),
    "plain_usage": [c.usage is not None for c in plain], "last_usage": usage[-1].usage.total_tokens,
    "models": metrics.model_dump(mode="json")["models"], "requests": metrics.total_requests,
    "by_fields": [store.metrics(name).total_requests for name in ("dave", "erin")],
}))
""" + STOP_EXAMPLE


def test_the_openai_sdk_parses_the_examples_json_and_sse_replies() -> None:
    result = subprocess.run([sys.executable, "-c", SDK_SCRIPT, str(ROOT / "examples" / "fastapi_app")],
                            capture_output=True, text=True, timeout=120, env=ENV)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["created"] > 0 and report["total_tokens"] == 80 + 240
    assert report["text"] == "(local stand-in) You said: Hello there"
    assert not any(report["plain_usage"]) and report["last_usage"] == 320
    # The stand-in is priced through the same machinery: 80 x $5 + 240 x $15 per million, three calls.
    assert report["models"] == [{"model": "local-stand-in-1", "cost": "0.012", "input_tokens": 240,
                                 "output_tokens": 720, "requests": 3}]
    assert report["requests"] == 3
    assert report["by_fields"] == [1, 1]  # OpenAI's `user` and `safety_identifier` name the identity


# -- in process: the example app driven by the real openai SDK over httpx's ASGI transport ------------
def _example() -> Any:
    """The example's ``app`` module, imported in this process as package ``fastapi_example``."""
    if "fastapi_example.app" not in sys.modules:
        package = types.ModuleType("fastapi_example")
        package.__path__ = [str(ROOT / "examples" / "fastapi_app")]
        sys.modules["fastapi_example"] = package
        example = importlib.import_module("fastapi_example.app")

        @example.app.get("/v1/test-only/collect")
        def collect() -> dict[str, str]:
            """A bystander that records nothing: it runs the garbage collector inside its request."""
            gc.collect()
            return {}

    return sys.modules["fastapi_example.app"]


def _sdk(example: Any, **headers: str) -> openai.AsyncOpenAI:
    transport = httpx2.ASGITransport(app=example.app)
    return openai.AsyncOpenAI(api_key="unused", base_url="http://example/v1", max_retries=0,
                              http_client=httpx2.AsyncClient(transport=transport, headers=headers))


async def _leave_after_first_chunk(example: Any, external_id: str) -> None:
    body = json.dumps({"model": "local-stand-in-1", "stream": True,
                       "messages": [{"role": "user", "content": "Hello there"}]}).encode()
    first = await leave_after_first_chunk(example.app, "/v1/chat/completions", body, {"X-Identity-Id": external_id})
    assert first.startswith(b"data: {")


def _spend(example: Any, external_id: str) -> tuple[str, int, int]:
    metrics = example.store.metrics(external_id)
    return str(metrics.total_cost), metrics.total_tokens, metrics.total_requests


@pytest.mark.anyio
async def test_a_client_that_leaves_a_stream_early_is_charged_for_it_once_and_nobody_else_is() -> None:
    example = _example()
    await _leave_after_first_chunk(example, "frank")
    assert _spend(example, "frank") == ("0.004", 320, 1)
    async with _sdk(example, **{"X-Identity-Id": "grace"}) as bystander:
        await bystander.get("/test-only/collect", cast_to=httpx2.Response)  # collects what frank left behind
    assert _spend(example, "grace") == ("0", 0, 1)
    assert _spend(example, "frank") == ("0.004", 320, 1)


@pytest.mark.anyio
async def test_a_stream_helper_call_after_an_early_close_is_charged_one_call() -> None:
    example = _example()
    await _leave_after_first_chunk(example, "heidi")
    async with _sdk(example, **{"X-Identity-Id": "ivan"}) as client:
        async with client.chat.completions.stream(model="local-stand-in-1",
                                                  messages=[{"role": "user", "content": "Hello there"}]) as stream:
            completion = await stream.get_final_completion()
        gc.collect()
    assert completion.choices[0].message.content == "(local stand-in) You said: Hello there"
    assert _spend(example, "ivan") == ("0.004", 320, 1)
    assert _spend(example, "heidi") == ("0.004", 320, 1)


@pytest.mark.anyio
async def test_content_parts_and_an_assistants_tool_calls_without_content_are_accepted() -> None:
    async with _sdk(_example(), **{"X-Identity-Id": "judy"}) as client:
        completion = await client.chat.completions.create(model="local-stand-in-1", messages=[
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": [{"type": "text", "text": "Weather"}, {"type": "text", "text": "in Paris?"}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
            {"role": "user", "content": [{"type": "text", "text": "Thanks"}]}])
    assert completion.choices[0].message.content == "(local stand-in) You said: Thanks"
    assert completion.usage is not None and completion.usage.prompt_tokens == 40 * 7  # words of text


@pytest.mark.anyio
async def test_the_model_list_is_served() -> None:
    async with _sdk(_example()) as client:
        models = [model.id async for model in client.models.list()]
    assert models == ["local-stand-in-1"]


@pytest.mark.anyio
async def test_the_chat_view_answers_a_request_let_through_untracked() -> None:
    """Under the "open" outage policy the view runs with no identity (``current_identity()`` is None)."""
    example = _example()
    token = bind(Untracked("zoe"))  # what the middleware binds when the store is down
    try:
        answer = await example.chat(example.ChatRequest(messages=[{"role": "user", "content": "Hi"}]))
        streamed = await example.chat(example.ChatRequest(messages=[{"role": "user", "content": "Hi"}], stream=True))
        body = b"".join([chunk async for chunk in streamed.body_iterator])
    finally:
        unbind(token)
    assert answer["identity"] is None and answer["cost_usd"] is None
    assert body.endswith(b"data: [DONE]\n\n")
