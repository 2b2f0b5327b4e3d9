"""Budget threshold alerts delivered off the request path: URLs get a signed JSON POST, callables are called.

The store decides atomically that an alert fires (once per budget, threshold and period, across all
processes) when it commits the usage that crossed it, and hands the event here. A daemon thread
delivers each event to the notifiers its alert names, retrying a failing URL; failures are logged,
never raised into the app.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from ..core.signing import SIGNATURE_HEADER, sign

__all__ = ["Notifier", "Notifiers"]

logger = logging.getLogger("identity_middleware.alerts")

Notifier = str | Callable[[dict[str, Any]], object]
RETRY_DELAYS = (0.5, 2.0, 8.0)  # seconds before the 2nd, 3rd and 4th attempt
TIMEOUT = 5.0


class Notifiers:
    """``{"id": "https://..." | callable}``; ``secret`` signs URL deliveries (``X-Identity-Signature:
    t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``)."""

    def __init__(self, notifiers: Mapping[str, Notifier], secret: str | bytes | None = None,
                 retry_delays: tuple[float, ...] = RETRY_DELAYS) -> None:
        for name, target in notifiers.items():
            if not callable(target) and not (isinstance(target, str) and target.startswith(("http://", "https://"))):
                raise ValueError(f"notifier {name!r}: an http(s) URL or a callable")
        self.notifiers = dict(notifiers)
        self.secret = secret
        self.retry_delays = retry_delays
        self._queue: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._busy = 0

    def __call__(self, events: list[dict[str, Any]]) -> None:
        """Queue ``events`` for delivery (returns at once)."""
        for event in events:
            for notifier_id in event.get("notifier_ids") or ():
                with self._lock:
                    self._busy += 1
                self._queue.put((notifier_id, event))
        self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="identity-middleware-alerts", daemon=True)
                self._thread.start()

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued was delivered or given up (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._busy == 0:
                    return True
            time.sleep(0.01)
        return False

    def _run(self) -> None:
        while True:
            notifier_id, event = self._queue.get()
            try:
                self._deliver(notifier_id, event)
            finally:
                with self._lock:
                    self._busy -= 1

    def _deliver(self, notifier_id: str, event: dict[str, Any]) -> None:
        target = self.notifiers.get(notifier_id)
        if target is None:
            logger.warning("budget alert for unknown notifier %r (budget %s)", notifier_id, event.get("budget_id"))
            return
        payload = {name: value for name, value in event.items() if name != "notifier_ids"}
        for attempt, delay in enumerate((0.0, *self.retry_delays)):
            time.sleep(delay)
            try:
                if callable(target):
                    target(payload)
                else:
                    self._post(target, payload)
                return
            except Exception as error:  # a notifier's failure never reaches the app
                logger.warning("budget alert to %r failed (attempt %d): %s", notifier_id, attempt + 1, error)
        logger.error("budget alert to %r given up after %d attempts: %s", notifier_id,
                     len(self.retry_delays) + 1, payload)

    def _post(self, url: str, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, separators=(",", ":"))
        headers = {"content-type": "application/json", "user-agent": "identity-middleware"}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.secret, body, time.time())
        request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            if response.status >= 300:
                raise OSError(f"HTTP {response.status}")
