"""One request's life, sans-IO: a request's parts in, an outcome out; one sync and one async driver."""

from __future__ import annotations

from ..context import Untracked
from .outcome import ANONYMOUS, Mark, Outcome, Refused, Tracked
from .request import JsonBody, Request, header_text
from .steps import Flow

__all__ = ["ANONYMOUS", "Flow", "JsonBody", "Mark", "Outcome", "Refused", "Request", "Tracked", "Untracked",
           "header_text"]
