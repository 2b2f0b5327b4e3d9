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
