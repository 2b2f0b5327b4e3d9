"""One request's life: admission sans-IO (a request's parts in, an outcome out), then RequestLife around the app."""

from __future__ import annotations

from ..context import Untracked
from .life import RequestLife
from .outcome import ANONYMOUS, Mark, Outcome, Refused, Tracked
from .request import JsonBody, Request, header_text
from .steps import Flow

__all__ = ["ANONYMOUS", "Flow", "JsonBody", "Mark", "Outcome", "Refused", "Request", "RequestLife", "Tracked",
           "Untracked", "header_text"]
