"""Every command line the README and the docs show runs, and prints what the page says it prints.

The ```bash blocks of a page that call ``identity-middleware`` run in order under ``bash -eu``
against the suite's redis-server (``redis://localhost:6379/0`` on the page is replaced by it), in
one temporary directory, with ``identity-middleware`` on PATH being this checkout's. A ```text
block right after a block is its expected output (doctest ELLIPSIS). A block whose first line is
``# fragment: <why>`` is not run (``serve`` runs until stopped: tests/test_cli.py serves it).
"""

from __future__ import annotations

import doctest
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from test_docs_examples import DOC_REDIS_URL, PAGES, ROOT, Example, examples

pytestmark = pytest.mark.redis

CALL = re.compile(r"(?:^|\$\(|\|\||&&|\s)identity-middleware((?: [a-z][a-z_-]*)+)", re.MULTILINE)
TAKES_ACTION = {"budget", "budgets"}  # these take an action word after them


def shows_the_cli(example: Example) -> bool:
    return CALL.search(example.code) is not None


BLOCKS = {page: [block for block in examples(page, "bash") if shows_the_cli(block)] for page in PAGES}
EXPORTS = {page: "".join(line + "\n" for block in examples(page, "bash") if not block.fragment
                         for line in block.code.splitlines() if line.startswith("export IDENTITY_MIDDLEWARE_"))
           for page in PAGES}
PAGES_WITH_COMMANDS = [page for page, blocks in BLOCKS.items() if any(not block.fragment for block in blocks)]


def commands_in(code: str) -> set[str]:
    """``budget set``, ``list``, ...: the subcommand each call names."""
    found = set()
    for match in CALL.finditer(code):
        words = match.group(1).split()
        found.add(" ".join(words[:2]) if words[0] in TAKES_ACTION and len(words) > 1 else words[0])
    return found


def test_every_documented_command_is_executed() -> None:
    shown = {command for blocks in BLOCKS.values() for block in blocks for command in commands_in(block.code)}
    executed = {command for blocks in BLOCKS.values() for block in blocks if not block.fragment
                for command in commands_in(block.code)}
    assert {"create", "list", "show", "delete", "record", "budget set", "budgets create"} <= executed
    assert shown - executed <= {"serve"}  # serve runs until stopped: tests/test_cli.py starts and queries it


@pytest.fixture
def shell(tmp_path: Path, redis_url: str) -> dict[str, str]:
    """An environment whose ``identity-middleware`` is this checkout's, on a flushed Redis database."""
    url = redis_url.rsplit("/", 1)[0] + "/8"
    import redis

    with redis.Redis.from_url(url) as client:
        client.flushdb()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "identity-middleware"
    script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m identity_middleware "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "DOCS_REDIS_URL": url,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize("page", PAGES_WITH_COMMANDS, ids=lambda page: str(page.relative_to(ROOT)))
def test_the_pages_commands_run_and_print_what_it_shows(page: Path, shell: dict[str, str], tmp_path: Path) -> None:
    exports = EXPORTS[page].replace(DOC_REDIS_URL, shell["DOCS_REDIS_URL"])  # the page's store URL
    for block in BLOCKS[page]:
        if block.fragment:
            continue
        code = block.code.replace(DOC_REDIS_URL, shell["DOCS_REDIS_URL"])
        result = subprocess.run(["bash", "-euc", exports + code], cwd=tmp_path, env=shell, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, f"{block.name} failed:\n{result.stderr}"
        assert "in memory" not in result.stderr, f"{block.name} ran on the in-memory store"
        if block.output is not None:
            flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
            assert doctest.OutputChecker().check_output(block.output, result.stdout, flags), (
                f"{block.name} printed:\n{result.stdout}\nthe page shows:\n{block.output}")


def test_the_django_examples_operator_commands_run(shell: dict[str, str], tmp_path: Path) -> None:
    """examples/django_app/README.md's ``manage.py identities`` block, on Redis, after alice's calls."""
    page = ROOT / "examples" / "django_app" / "README.md"
    [block] = [block for block in examples(page, "bash") if "manage.py identities" in block.code]
    from identity_middleware import IdentityInput
    from identity_middleware.stores import RedisStore

    store = RedisStore.from_url(shell["DOCS_REDIS_URL"])
    store.create(IdentityInput(id="alice"))  # the README's curl loop made her
    store.close()
    python = tmp_path / "bin" / "python"  # this interpreter (its venv has Django), as the page's `python`
    python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    code = block.code.replace(DOC_REDIS_URL, shell["DOCS_REDIS_URL"])
    result = subprocess.run(["bash", "-euc", code], cwd=ROOT, env=shell, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "alice daily: spent 0.00 of 5.00 USD" in result.stdout
    assert result.stdout.splitlines()[-1].split()[:2] == ["daily", "5.00"]
