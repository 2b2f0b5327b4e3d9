"""Options validated once, where what they configure is built: each invalid one named with what is wrong.

A normaliser takes an option's value as a user wrote it and returns it as it is kept, or raises
:class:`Invalid` saying why; :func:`normalise` runs a table of them over a frozen dataclass's fields
and raises one :class:`InvalidOption` naming every problem. The middleware's options
(:mod:`identity_middleware.config`) and every store's (:mod:`identity_middleware.stores.options`)
are validated so, and Django's system checks report the same problems.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["Invalid", "InvalidOption", "Normalisers", "Problem", "checked", "invalid", "mapping", "normalise",
           "secret"]

Normalisers = Mapping[str, Callable[[object], object]]  # option name -> its normaliser


class Problem(NamedTuple):
    """One invalid option: the option's name (and where in it), what is wrong, and the number of
    the Django system check that reports it (``identity_middleware.E00n``)."""

    option: str
    where: str  # within the option: "['daily']", "[0]", or ""
    message: str
    check: int = 9

    def __str__(self) -> str:
        return f"{self.option}{self.where}: {self.message}"


class InvalidOption(TypeError, ValueError):
    """Options that cannot work, raised where the app is built; names each invalid option."""

    def __init__(self, found: Sequence[Problem]) -> None:
        self.problems = tuple(found)
        super().__init__("invalid identity middleware option" + ("s: " if len(found) > 1 else ": ")
                         + "; ".join(map(str, found)))


class Invalid(Exception):
    """An option's problems, each ``(where within the option, message, check)``."""

    def __init__(self, *found: tuple[str, str, int]) -> None:
        super().__init__(found)
        self.found = found

    def problems(self, option: str) -> Iterator[Problem]:
        for where, message, check in self.found:
            yield Problem(option, where, message, check)


def invalid(message: str, check: int = 9, where: str = "") -> Invalid:
    return Invalid((where, message, check))


def checked(values: Mapping[str, object], normalisers: Normalisers) -> tuple[dict[str, object], list[Problem]]:
    """Each value that has a normaliser, normalised (by name), and every problem found: what
    :func:`normalise` applies, and what Django's system checks report without building anything."""
    normalised: dict[str, object] = {}
    found: list[Problem] = []
    for name, value in values.items():
        normaliser = normalisers.get(name)
        if normaliser is None:
            continue
        try:
            normalised[name] = normaliser(value)
        except Invalid as error:
            found.extend(error.problems(name))
    return normalised, found


def normalise(options: DataclassInstance, normalisers: Normalisers) -> None:
    """Each field of the (frozen) dataclass ``options`` that has a normaliser replaced by its
    normalised value; :class:`InvalidOption` naming every invalid one."""
    normalised, found = checked({option.name: getattr(options, option.name) for option in fields(options)},
                                normalisers)
    if found:
        raise InvalidOption(found)
    for name, value in normalised.items():
        object.__setattr__(options, name, value)


# -- normalisers more than one kind of options uses -----------------------------------------------------
def secret(value: object) -> object:
    if value is not None and (not isinstance(value, str | bytes) or not value):
        raise invalid("a non-empty str or bytes (or None)")
    return value


def mapping(value: object, what: str) -> Mapping[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise invalid(f"a dict of {what}, not {value!r}")
    return value
