"""Measuring ``src/`` as committed at a revision: exported with ``git archive``, put first on PYTHONPATH."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .apps import SOURCE_ENV

REPO = Path(__file__).resolve().parent.parent


def export(revision: str, directory: Path) -> tuple[str, Path]:
    """``src/`` as committed at ``revision``, exported under ``directory``: (short sha, tree)."""
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", revision], capture_output=True,
                         text=True, timeout=30, check=True).stdout.strip()
    tree = directory / f"src-{sha}"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", sha, "src"], capture_output=True,
                             timeout=60, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, timeout=60, check=True)
    return sha, tree


def rerun_at(revision: str, argv: list[str]) -> int:
    """Rerun ``python -m bench.run argv`` against ``src/`` as committed at ``revision``, so figures do
    not depend on work in progress in the checkout."""
    with tempfile.TemporaryDirectory(prefix="bench-src-") as tmp:
        sha, tree = export(revision, Path(tmp))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree / "src"), str(REPO), env.get("PYTHONPATH")]))
        env[SOURCE_ENV] = f"{revision} ({sha})"
        return subprocess.run([sys.executable, "-m", "bench.run", *argv], cwd=REPO, env=env,
                              check=False).returncode
