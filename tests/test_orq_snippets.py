"""The Python snippets of orq's "Track usage by identity" page, run verbatim against a real admin server;
and the README's SDK block against the FastAPI example.

The text is the page's, character for character (its one no-break space written as an escape). The
snippets that build their own client (``Orq(api_key=os.getenv("ORQ_API_KEY"))``) reach this server
the way a user's environment would point them elsewhere: ``ORQ_API_KEY`` is set, and the SDK's
default server entry names this server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orq_ai_sdk.sdkconfiguration
import pytest
from orq_ai_sdk import Orq, models

from browser import live_server
from conftest import MakeStore
from example_server import ENV, SERVE_EXAMPLE, STOP_EXAMPLE
from identity_middleware.admin import create_admin_app
from identity_middleware.core.models import IdentityInput
from identity_middleware.stores import Store

TOKEN = "snippet-admin-token"
ROOT = Path(__file__).resolve().parent.parent

CREATE = '''
identity = client.identities.create(
    external_id="user123",
    display_name="John Doe",
    email="[email\u00a0protected]",
    avatar_url="https://example.com/avatar.jpg",
    metadata={"role": "admin"}
)
'''

RETRIEVE = '''
from orq_ai_sdk import Orq
import os

orq = Orq(api_key=os.getenv("ORQ_API_KEY"))

identity = orq.identities.retrieve(id="01ARZ3NDEKTSV4RRFFQ69G5FAV")
print(identity)
'''

LIST_WITH_METRICS = '''
from orq_ai_sdk import Orq
import os

orq = Orq(api_key=os.getenv("ORQ_API_KEY"))

result = orq.identities.list(include_metrics=True)

print(result.data)
print(f"Has more: {result.has_more}")
'''

# The stored page went through Cloudflare's e-mail protection, which replaced the address in the
# create snippet with this placeholder; the address the page showed is put back before running it.
PROTECTED_EMAIL = "[email\u00a0protected]"


@pytest.fixture
def served(store_kind: str, make_store: MakeStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Store]]:
    store = make_store(store_kind)
    with live_server(create_admin_app(store, token=TOKEN)) as url:
        monkeypatch.setenv("ORQ_API_KEY", TOKEN)
        monkeypatch.setattr(orq_ai_sdk.sdkconfiguration, "SERVERS", [url])
        yield url, store


def _run(snippet: str, **names: Any) -> dict[str, Any]:
    namespace: dict[str, Any] = {"os": os, **names}
    exec(compile(snippet, "<orq snippet>", "exec"), namespace)
    return namespace


def test_the_create_snippet_runs(served: tuple[str, Store]) -> None:
    client = Orq(api_key=TOKEN, server_url=served[0])
    made = _run(CREATE.replace(PROTECTED_EMAIL, "john@example.com"), client=client)["identity"]
    assert made.result.identity.external_id == "user123" and made.result.identity.display_name == "John Doe"
    assert served[1].retrieve("user123").metadata == {"role": "admin"}
    with pytest.raises(models.APIDefaultError) as raised:  # the placeholder is no address: 400, naming the field
        _run(CREATE.replace("user123", "user124"), client=client)
    assert raised.value.status_code == 400 and '"field":"email"' in raised.value.body


def test_the_retrieve_snippet_runs(served: tuple[str, Store], capsys: pytest.CaptureFixture[str]) -> None:
    served[1].create(IdentityInput(id="01ARZ3NDEKTSV4RRFFQ69G5FAV", display_name="Jane Smith"))
    identity = _run(RETRIEVE)["identity"]
    assert identity.identity.external_id == "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    assert "display_name='Jane Smith'" in capsys.readouterr().out


def test_the_list_with_metrics_snippet_runs(served: tuple[str, Store], capsys: pytest.CaptureFixture[str]) -> None:
    served[1].create(IdentityInput(id="user_12345", display_name="Jane Doe"))
    served[1].record("user_12345", cost="0.011691", input_tokens=1000, output_tokens=626)
    result = _run(LIST_WITH_METRICS)["result"]
    [identity] = result.data
    assert identity.metrics.total_cost == 0.011691 and identity.metrics.total_tokens == 1626
    assert capsys.readouterr().out.endswith("Has more: False\n")


# The README's block, in a child process beside the FastAPI example (its modules are top-level
# `app` and `model`, as when it is run), served by uvicorn with its lifespan, at the README's URL's path.
README_RUNNER = SERVE_EXAMPLE + """
exec(sys.stdin.read().replace("http://127.0.0.1:8000", f"http://127.0.0.1:{port}"))
""" + STOP_EXAMPLE


def test_the_readme_sdk_block_runs_against_the_fastapi_example() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- orq-sdk-example -->\n```python\n", 1)[1].split("```", 1)[0]
    result = subprocess.run([sys.executable, "-c", README_RUNNER, str(ROOT / "examples" / "fastapi_app")],
                            input=block, capture_output=True, text=True, timeout=120,
                            env=ENV)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "default" and "external_id='user123'" in lines[1] and "external_id='alice'" in lines[1]
    assert lines[-1] == "Has more: False"
