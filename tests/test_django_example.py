"""The Django example project runs as documented: its checks pass and the fourth chat call is a 429."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "django_app"

# Run in a child process: the example has its own settings module, and this session's Django
# is already configured for the test site.
SCRIPT = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
os.environ["DJANGO_SETTINGS_MODULE"] = "chatsite.settings"
os.environ.pop("REDIS_URL", None)
import django
django.setup()
from django.test import Client
client = Client(SERVER_NAME="localhost", enforce_csrf_checks=True)  # CsrfViewMiddleware is on
body = json.dumps({"identity": {"id": "alice"}, "messages": [{"role": "user", "content": "Hello there"}]})
statuses = [client.post("/v1/chat/completions", body, content_type="application/json").status_code
            for _ in range(4)]
listing = client.get("/identities").json()
print(json.dumps({"statuses": statuses, "listing": listing}))
"""


def test_the_example_passes_its_system_checks() -> None:
    result = subprocess.run([sys.executable, str(EXAMPLE / "manage.py"), "check"], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_the_example_chat_is_budgeted_and_the_identities_page_shows_the_spend() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(EXAMPLE)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["statuses"] == [200, 200, 200, 429]
    [alice] = report["listing"]["data"]
    assert alice["metrics"]["total_cost"] == "0.012"
    assert alice["budgets"][0]["spent"] == "0.012" and alice["budgets"][0]["amount"] == "0.02"


def test_the_example_ships_an_asgi_application() -> None:
    script = ("import os, sys; sys.path.insert(0, sys.argv[1]); from chatsite.asgi import application; "
              "print(type(application).__name__)")
    result = subprocess.run([sys.executable, "-c", script, str(EXAMPLE)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ASGIHandler"


# The openai SDK against the example served by wsgiref (Django's WSGI handler) in a child process.
SDK_SCRIPT = """
import json, os, sys, threading
sys.path.insert(0, sys.argv[1])
os.environ["DJANGO_SETTINGS_MODULE"] = "chatsite.settings"
os.environ.pop("REDIS_URL", None)
import django
django.setup()
from wsgiref.simple_server import WSGIRequestHandler, make_server
from django.core.wsgi import get_wsgi_application
import openai
from identity_middleware.django import get_store

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

server = make_server("127.0.0.1", 0, get_wsgi_application(), handler_class=Quiet)
threading.Thread(target=server.serve_forever, daemon=True).start()
base = f"http://127.0.0.1:{server.server_port}/v1"
ask = [{"role": "user", "content": "Hello there"}]
plain = openai.OpenAI(api_key="unused", base_url=base, max_retries=0)
def as_(name):
    return openai.OpenAI(api_key="unused", base_url=base, max_retries=0, default_headers={"X-Identity-Id": name})
streamed = list(as_("carol").chat.completions.create(model="local-stand-in-1", messages=ask, stream=True))
with_usage = list(as_("dan").chat.completions.create(model="local-stand-in-1", messages=ask, stream=True,
                                                     stream_options={"include_usage": True}))
by_user = plain.chat.completions.create(model="local-stand-in-1", messages=ask, user="dave")
by_safety = plain.chat.completions.create(model="local-stand-in-1", messages=ask, safety_identifier="erin")
parts = as_("judy").chat.completions.create(model="local-stand-in-1", messages=[
    {"role": "user", "content": [{"type": "text", "text": "Weather"}, {"type": "text", "text": "in Paris?"}]},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
    {"role": "user", "content": [{"type": "text", "text": "Thanks"}]}])
models = [model.id for model in plain.models.list()]
server.shutdown()
store = get_store()
spend = {name: [str(store.metrics(name).total_cost), store.metrics(name).total_requests]
         for name in ("carol", "dan", "dave", "erin", "judy")}
print(json.dumps({
    "text": "".join(c.choices[0].delta.content or "" for c in streamed if c.choices),
    "chunks": len(streamed), "plain_usage": [c.usage is not None for c in streamed],
    "last_usage": with_usage[-1].usage.total_tokens, "identities": [by_user.identity, by_safety.identity],
    "parts": [parts.choices[0].message.content, parts.usage.prompt_tokens], "models": models, "spend": spend,
}))
"""


def test_the_openai_sdk_streams_and_is_metered_by_the_django_example() -> None:
    result = subprocess.run([sys.executable, "-c", SDK_SCRIPT, str(EXAMPLE)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["text"] == "(local stand-in) You said: Hello there" and report["chunks"] == 8
    assert not any(report["plain_usage"]) and report["last_usage"] == 320
    assert report["identities"] == ["dave", "erin"]  # OpenAI's `user` and `safety_identifier` name the identity
    assert report["parts"] == ["(local stand-in) You said: Thanks", 40 * 5]
    assert report["models"] == ["local-stand-in-1"]
    # Each call once, at 80 x $5 + 240 x $15 per million (judy's: 200 x $5 + 200 x $15).
    assert report["spend"] == {"carol": ["0.004", 1], "dan": ["0.004", 1], "dave": ["0.004", 1],
                               "erin": ["0.004", 1], "judy": ["0.004", 1]}


# A client that leaves a stream after its first chunk, then a bystander that records nothing.
LEAVING_SCRIPT = """
import gc, json, os, sys
sys.path.insert(0, sys.argv[1])
os.environ["DJANGO_SETTINGS_MODULE"] = "chatsite.settings"
os.environ.pop("REDIS_URL", None)
import django
django.setup()
from django.test import Client
from identity_middleware import IdentityInput
from identity_middleware.django import get_store
store = get_store()
for name in ("frank", "grace"):
    store.create(IdentityInput(id=name))
client = Client(SERVER_NAME="localhost")
body = json.dumps({"stream": True, "messages": [{"role": "user", "content": "Hello there"}]})
response = client.post("/v1/chat/completions", body, content_type="application/json", HTTP_X_IDENTITY_ID="frank")
first = next(iter(response.streaming_content))
response.close()  # the server closes the response of a client that went away
del response
bystander = client.get("/identities", HTTP_X_IDENTITY_ID="grace")
gc.collect()
spend = {name: [str(store.metrics(name).total_cost), store.metrics(name).total_requests]
         for name in ("frank", "grace")}
print(json.dumps({"first": first.decode(), "bystander": bystander.status_code, "spend": spend}))
"""


def test_a_client_that_leaves_a_stream_early_is_charged_for_it_once_and_nobody_else_is() -> None:
    result = subprocess.run([sys.executable, "-c", LEAVING_SCRIPT, str(EXAMPLE)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["first"].startswith("data: {") and report["bystander"] == 200
    assert report["spend"] == {"frank": ["0.004", 1], "grace": ["0", 1]}


# Redis down (nothing listens on the port) under the default "open" policy: the view runs untracked.
UNTRACKED_SCRIPT = """
import json, os, socket, sys
sys.path.insert(0, sys.argv[1])
os.environ["DJANGO_SETTINGS_MODULE"] = "chatsite.settings"
with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
os.environ["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
import django
django.setup()
from django.test import Client
client = Client(SERVER_NAME="localhost")
answers = []
for stream in (False, True):
    response = client.post("/v1/chat/completions", json.dumps({"stream": stream, "messages": [
        {"role": "user", "content": "Hi"}]}), content_type="application/json", HTTP_X_IDENTITY_ID="zoe")
    content = b"".join(response.streaming_content) if stream else response.content
    answers.append([response.status_code, content.decode()])
print(json.dumps(answers))
"""


def test_the_chat_view_answers_a_request_let_through_untracked() -> None:
    result = subprocess.run([sys.executable, "-c", UNTRACKED_SCRIPT, str(EXAMPLE)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    (status, body), (stream_status, stream) = json.loads(result.stdout.strip().splitlines()[-1])
    assert status == 200 and json.loads(body)["identity"] is None and json.loads(body)["cost_usd"] is None
    assert stream_status == 200 and stream.endswith("data: [DONE]\n\n")
