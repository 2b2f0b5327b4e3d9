"""The README's first command: the FastAPI example shows identities, spend and a budget 429."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from example_server import SERVE_EXAMPLE, STOP_EXAMPLE

ROOT = Path(__file__).resolve().parent.parent


def test_the_fastapi_demo_tracks_identities_and_answers_429() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "fastapi_app" / "demo.py")],
                            capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
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
                            capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["created"] > 0 and report["total_tokens"] == 80 + 240
    assert report["text"].strip() == "(local stand-in) You said: Hello there"
    assert not any(report["plain_usage"]) and report["last_usage"] == 320
    # The stand-in is priced through the same machinery: 80 x $5 + 240 x $15 per million, three calls.
    assert report["models"] == [{"model": "local-stand-in-1", "cost": "0.012", "input_tokens": 240,
                                 "output_tokens": 720, "requests": 3}]
    assert report["requests"] == 3
    assert report["by_fields"] == [1, 1]  # OpenAI's `user` and `safety_identifier` name the identity
