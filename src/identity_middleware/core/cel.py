"""CEL expressions of match budgets, parsed and evaluated by a maintained CEL library (never by us).

The library is ``common-expression-language`` (imported as ``cel``; Rust's ``cel`` crate under
it), a dependency imported on first use: a process without match budgets never loads it (its
import, about 0.2 s with the command line it ships, is paid once, when the first one appears).
This module is the only place that touches it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

__all__ = ["MAX_NESTING", "VARIABLES", "Expression", "InvalidExpression", "compiled"]

#: orq's variables (orq-ai-sdk's ``BudgetMatch``), and only those.
VARIABLES = ("model", "provider", "model_id", "api_key", "identity", "project", "metadata", "headers")

_STRINGS = re.compile(r"""(?s)[rRbB]*('''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")""")
_MACRO_VARIABLE = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_UNDEFINED = re.compile(r"Undefined variable or function: '([^']+)'")


_FATAL = (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError)
#: Brackets and unary operators nested deeper than this are refused before the library parses them:
#: a recursive parser's stack is not ours to bound, and no budget needs more.
MAX_NESTING = 32


def _nesting(text: str) -> int:
    """The deepest nesting of brackets (and runs of ``!`` or ``-``) outside string literals."""
    code = _STRINGS.sub('""', text)
    depth = deepest = run = 0
    for char in code:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        run = run + 1 if char in "!-" else 0
        deepest = max(deepest, depth + run)
    return deepest


class InvalidExpression(ValueError):
    """An expression the CEL library cannot parse, or that names a variable orq does not have."""


class Expression:
    """A parsed CEL expression and the orq variables it references."""

    __slots__ = ("_program", "text", "variables")

    def __init__(self, text: str, program: Any, variables: frozenset[str]) -> None:
        self.text = text
        self._program = program
        self.variables = variables

    def holds(self, variables: dict[str, Any]) -> bool:
        """``True`` only when the expression evaluates to ``true`` (an error is no match)."""
        try:
            return self._program.execute(variables) is True
        except _FATAL:
            raise
        except BaseException:  # the library's evaluation errors (a missing key, a type mismatch); a Rust
            return False       # panic arrives as a BaseException (pyo3's PanicException)


def _bound(code: str) -> set[str]:
    """The variables a comprehension macro binds (``headers.exists(h, ...)`` binds ``h``)."""
    return set(_MACRO_VARIABLE.findall(code))


@lru_cache(maxsize=1024)
def compiled(text: str) -> Expression:
    """``text`` parsed (cached by text); :class:`InvalidExpression` naming the problem."""
    import cel  # the CEL library: loaded only by apps with match budgets

    depth = _nesting(text)
    if depth > MAX_NESTING:
        raise InvalidExpression(f"the expression nests {depth} deep; at most {MAX_NESTING}")
    try:
        program = cel.compile(text)
    except _FATAL:
        raise
    except BaseException as error:  # the library's parse errors (a Rust panic too: pyo3's PanicException)
        raise InvalidExpression(f"the expression does not parse: {_first_line(error)}") from None
    names = set(program.variables()) - _bound(_STRINGS.sub('""', text))
    unknown = sorted(names - set(VARIABLES))
    if unknown:
        raise InvalidExpression(f"the expression reads {unknown[0]!r}, which is not a variable here "
                                f"(variables: {', '.join(VARIABLES)})")
    missing = _undefined(program)
    if missing is not None:
        raise InvalidExpression(f"the expression calls {missing!r}, which is not a CEL function")
    return Expression(text, program, frozenset(names))


def _empty() -> dict[str, Any]:
    return {"model": "", "provider": "", "model_id": "", "api_key": "", "identity": "", "project": "",
            "metadata": {}, "headers": {}}


def _undefined(program: Any) -> str | None:
    """A function the expression calls that the library does not have, found by evaluating it once
    with every variable empty (the library names it; one behind a short circuit stays unfound, and
    then only fails, which is no match, on the requests that reach it)."""
    try:
        program.execute(_empty())
    except _FATAL:
        raise
    except BaseException as error:
        found = _UNDEFINED.search(str(error))
        if found and found.group(1) not in VARIABLES:
            return found.group(1)
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]
