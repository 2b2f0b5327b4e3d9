"""Optional integrations: an import that needs an extra which is not installed says which to install."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["requires_extra"]


@contextmanager
def requires_extra(extra: str, what: str, *packages: str) -> Iterator[None]:
    """Imports in the block that fail for want of one of ``packages`` (default: the ``extra``'s own
    name) raise a :class:`ModuleNotFoundError` naming ``what`` needs it and the ``pip install`` line;
    a module missing for any other reason is raised as it is."""
    try:
        yield
    except ModuleNotFoundError as error:
        package = (error.name or "").partition(".")[0]
        if package not in (packages or (extra,)):
            raise
        raise ModuleNotFoundError(
            f"{what} needs {package!r}, which is not installed: pip install 'identity-middleware[{extra}]'",
            name=error.name) from error
