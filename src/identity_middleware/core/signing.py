"""Signed identity headers: ``X-Identity-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key, "<t>.<id>")>``.

A proxy or backend that authenticates callers signs the id it vouches for; the middleware accepts
the header only with a fresh, valid signature (``signing_key=``), so a browser cannot name anyone.
"""

from __future__ import annotations

import hashlib
import hmac
import re

__all__ = ["SIGNATURE_HEADER", "SIGNATURE_WINDOW", "sign", "signature_problem"]

SIGNATURE_HEADER = "X-Identity-Signature"
SIGNATURE_WINDOW = 300  # seconds a signature stays valid, either side of now (clock skew included)
# What a well-formed header holds, checked before any arithmetic or comparison: a timestamp of at
# most 15 ASCII digits (a 400-digit one overflows a float) and a 64-digit hex MAC (compare_digest
# refuses non-ASCII text).
_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_MAC = re.compile(r"[0-9a-fA-F]{64}")
_MALFORMED = "malformed (expected t=<unix seconds>,v1=<hex>)"


def _mac(key: bytes, timestamp: int, external_id: str) -> str:
    return hmac.new(key, f"{timestamp}.{external_id}".encode(), hashlib.sha256).hexdigest()


def sign(key: str | bytes, external_id: str, now: float) -> str:
    """The header value vouching for ``external_id`` at ``now`` (Unix seconds)."""
    raw = key.encode() if isinstance(key, str) else key
    timestamp = int(now)
    return f"t={timestamp},v1={_mac(raw, timestamp, external_id)}"


def signature_problem(key: str | bytes, external_id: str, header: str | None, now: float,
                      window: int = SIGNATURE_WINDOW) -> str | None:
    """Why ``header`` does not vouch for ``external_id`` at ``now``; ``None`` when it does."""
    if not header:
        return "missing"
    fields: dict[str, str] = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        fields.setdefault(name, value)
    text, mac = fields.get("t", ""), fields.get("v1", "")
    if not _TIMESTAMP.fullmatch(text) or not _MAC.fullmatch(mac):
        return _MALFORMED
    timestamp = int(text)
    if abs(now - timestamp) > window:
        return f"stale (older than {window} s) or from the future"
    raw = key.encode() if isinstance(key, str) else key
    if not hmac.compare_digest(mac.lower(), _mac(raw, timestamp, external_id)):
        return "wrong signature"
    return None
