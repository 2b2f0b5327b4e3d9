"""One request's life: admission sans-IO (a request's parts in, an outcome out), then RequestLife around the app."""

from __future__ import annotations

from ..context import Untracked
from .life import RequestLife
from .request import JsonBody, Mark, Request, header_text
from .steps import ANONYMOUS, Flow, Outcome, Refused, Tracked

__all__ = ["ANONYMOUS", "Flow", "JsonBody", "Mark", "Outcome", "Refused", "Request", "RequestLife", "Tracked",
           "Untracked", "header_text"]
