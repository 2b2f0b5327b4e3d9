"""The example's main job: serve the app over real HTTP, send traffic, show spend and a 429.

    python examples/fastapi_app/demo.py
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from app import app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def show(label: str, response: httpx.Response) -> None:
    body = response.json()
    if response.status_code == 200:
        detail = f"identity={body['identity']} model={body['model']} cost=${body['cost_usd']}"
    else:
        error = body["error"]
        detail = f"{error['type']}: {error['message']} (Retry-After: {response.headers.get('retry-after')}s)"
    print(f"  {label:<34} -> {response.status_code}  {detail}")


def table(identities: list[dict[str, Any]]) -> None:
    print(f"\n  {'identity':<10} {'requests':>8} {'errors':>7} {'tokens':>7} {'cost USD':>10}   budgets")
    for item in identities:
        metrics = item["metrics"]
        budgets = ", ".join(f"{b['period']} {b['spent']}/{b['amount']} ({b['percent']:.0f}%)"
                            for b in item["budgets"])
        print(f"  {item['external_id']:<10} {metrics['total_requests']:>8} "
              f"{metrics['error_rate'] * 100:>6.0f}% {metrics['total_tokens']:>7} "
              f"{metrics['total_cost']:>10}   {budgets}")


def main() -> int:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            print("the server did not start", file=sys.stderr)
            return 1
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    model = "OpenAI" if os.environ.get("OPENAI_API_KEY") else "a local stand-in model (offline)"
    print(f"identity-middleware demo: FastAPI on {base}, memory store, {model}\n")
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            ask = {"messages": [{"role": "user", "content": "How do I upgrade my plan to pro?"}]}
            print("alice is on a $0.02/day trial; each call reserves $0.01 up front and costs about $0.009:")
            for attempt in range(1, 5):
                response = client.post("/v1/chat/completions", json={
                    **ask, "identity": {"id": "alice", "display_name": "Alice", "email": "alice@example.com"}})
                show(f"alice (body identity) call {attempt}", response)
            print("\nbob is tagged by a header (default budget $1.00/day); a call without identity, or an invalid one:")
            show("bob (X-Identity-Id header)", client.post("/v1/chat/completions", json=ask,
                                                           headers={"X-Identity-Id": "bob"}))
            untracked = client.post("/v1/chat/completions", json=ask)
            print(f"  {'no identity':<34} -> {untracked.status_code}  "
                  f"{untracked.json()['error']['type']} (the view is @budgeted: identity required)")
            invalid = client.post("/v1/chat/completions", json={**ask, "identity": {"id": "x" * 300}})
            print(f"  {'invalid identity':<34} -> {invalid.status_code}  {invalid.json()['error']['message']}")
            print("\nidentities with their 30-day metrics and live budgets (GET /identities):")
            table(client.get("/identities").json()["data"])
            admin = client.get("/admin/v2/identities/alice/budgets",
                               headers={"Authorization": "Bearer dev-admin-token"}).json()
            print(f"\nadmin API: GET /admin/v2/identities/alice/budgets -> {admin['data'][0]}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
