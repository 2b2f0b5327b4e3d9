"""The Lua scripts, read once from the package and called by SHA (each transport reloads one Redis forgot)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: str
    sha: str


def _load(name: str, *, with_lib: bool) -> Script:
    folder = resources.files(__package__)
    source = (folder / f"{name}.lua").read_text(encoding="utf-8")
    if with_lib:
        source = (folder / "lib.lua").read_text(encoding="utf-8") + "\n" + source
    return Script(name, source, hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest())


ADMIT = _load("admit", with_lib=True)
SETTLE = _load("settle", with_lib=True)
STATE = _load("state", with_lib=True)
LEASE = _load("lease", with_lib=True)
METRICS = _load("metrics", with_lib=False)
SCOPED = _load("scoped", with_lib=False)
TOPUP = _load("topup", with_lib=False)
ALL = (ADMIT, SETTLE, STATE, LEASE, METRICS, SCOPED, TOPUP)
