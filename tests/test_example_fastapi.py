"""The README's first command: the FastAPI example shows identities, spend and a budget 429."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
