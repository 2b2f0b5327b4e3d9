"""Every Python example in the README and the docs runs, and prints what the page says it prints.

A ```python block is run as a script (``__name__ == "__main__"``) in a fresh interpreter, in a
temporary directory. A ```text block right after it is its expected output, compared as doctest
does with ELLIPSIS (``...`` stands for anything: ids, times). A block whose first line is a
``# fragment: <why>`` comment is deliberately partial (it needs your project, your servers or a
provider key) and is not run; the comment says why on the page itself. ``redis://localhost:6379/0``
in an example is the test suite's own redis-server.
"""

from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
DOC_REDIS_URL = "redis://localhost:6379/0"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Example:
    page: Path
    line: int
    language: str
    code: str
    output: str | None  # the ```text block right after it, if any

    @property
    def fragment(self) -> bool:
        return self.code.startswith("# fragment:")

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def examples(page: Path, language: str) -> list[Example]:
    """The fenced blocks of ``language`` on ``page``, each with the ```text block that follows it."""
    text = page.read_text()
    blocks = list(FENCE.finditer(text))
    found = []
    for index, block in enumerate(blocks):
        if block.group(1) != language:
            continue
        output = None
        if index + 1 < len(blocks):
            after = blocks[index + 1]
            between = text[block.end():after.start()]
            if after.group(1) == "text" and len(between.strip().splitlines()) <= 1:
                output = after.group(2)  # right after it, or after one line saying "It prints:"
        found.append(Example(page, text.count("\n", 0, block.start()) + 1, language, block.group(2), output))
    return found


PYTHON = [example for page in PAGES for example in examples(page, "python")]


def test_the_pages_have_examples_and_say_why_fragments_are_not_run() -> None:
    assert len([example for example in PYTHON if not example.fragment]) >= 20
    for example in PYTHON:
        if example.fragment:
            reason = example.code.splitlines()[0].removeprefix("# fragment:").strip()
            assert len(reason) > 10, f"{example.name}: say why this block is not run"


@pytest.mark.parametrize("example", [example for example in PYTHON if not example.fragment],
                         ids=lambda example: example.name)
def test_the_example_runs_and_prints_what_the_page_shows(example: Example, tmp_path: Path,
                                                         request: pytest.FixtureRequest) -> None:
    code = example.code
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    if DOC_REDIS_URL in code:
        url = str(request.getfixturevalue("redis_url")).rsplit("/", 1)[0] + "/7"
        import redis

        with redis.Redis.from_url(url) as client:
            client.flushdb()
        code = code.replace(DOC_REDIS_URL, url)
    script = tmp_path / "example.py"
    script.write_text(code)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, f"{example.name} failed:\n{result.stderr}"
    if example.output is not None:
        checker = doctest.OutputChecker()
        flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
        assert checker.check_output(example.output, result.stdout, flags), (
            f"{example.name} printed:\n{result.stdout}\nthe page shows:\n{example.output}")


def middleware_options() -> set[str]:
    """The keyword options ``IdentityMiddleware`` takes: the ``Options`` TypedDict its ``**options`` unpack."""
    from identity_middleware.config import Options

    return set(Options.__annotations__)


def test_the_options_table_names_every_middleware_option_and_no_other() -> None:
    from identity_middleware.stores.options import STORE_OPTIONS

    page = (ROOT / "docs" / "reference" / "options.md").read_text()
    middleware, store = page.split("\n## Options of the store\n")
    documented = set(re.findall(r"^\| `(\w+)` \|", middleware, re.MULTILINE))
    assert documented == middleware_options()
    assert set(re.findall(r"^\| `(\w+)` \|", store, re.MULTILINE)) == set(STORE_OPTIONS)
