"""Writes the settlement buffer from a thread of its own, so a sync settle returns at once.

One daemon thread per store and process, started by the first settlement after it was idle and
ended after ``IDLE`` seconds without one (a store that is no longer used leaves no thread behind).
A write lingers ``linger`` seconds first (the store's option), so that the settlements of the
requests meanwhile share its round trip, and each identity's one script call; ``stop`` cuts the
wait short. What a write could not land (an outage) stays buffered and is retried every
``RETRY`` seconds. The thread never survives a fork: the child starts its own on its first
settlement. At interpreter exit, and on ``close()``, the thread is stopped and the buffer written
by the caller.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Callable

from ...core.errors import StoreUnavailable
from .options import LINGER

logger = logging.getLogger("identity_middleware.stores.redis")

IDLE = 5.0  # seconds without a settlement before the thread ends
RETRY = 0.5  # seconds between attempts while settlements wait out an outage
FULL = 64  # ... unless this many are waiting already


class BackgroundWriter:
    """``poke()`` after buffering a settlement; the thread calls ``flush`` until nothing is left."""

    def __init__(self, flush: Callable[[], None], buffered: Callable[[], int], linger: float = LINGER) -> None:
        self._flush = flush
        self._buffered = buffered
        self._linger = linger
        self._halt = threading.Event()  # set by stop(): a write's linger ends at once
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stopped = False
        atexit.register(_stop_at_exit, weakref.ref(self))

    def poke(self) -> None:
        with self._lock:
            self._wake.set()
            if (self._thread is None or self._pid != os.getpid()) and not self._stopped:
                self._pid = os.getpid()
                self._wake = threading.Event()
                self._wake.set()
                self._thread = threading.Thread(target=self._run, args=(self._wake,), daemon=True,
                                                name="identity-middleware-redis-writer")
                self._thread.start()

    def stop(self) -> None:
        """End the thread after its current write (the caller then writes what is left)."""
        with self._lock:
            self._stopped = True
            thread, self._thread = self._thread, None
            self._wake.set()
            self._halt.set()
        if thread is not None and thread is not threading.current_thread() and self._pid == os.getpid():
            thread.join(timeout=10.0)

    def _run(self, wake: threading.Event) -> None:
        while True:
            woken = wake.wait(RETRY if self._buffered() else IDLE)
            with self._lock:
                if self._stopped or self._thread is not threading.current_thread():
                    return
                if not woken and not self._buffered():
                    self._thread = None  # idle: the next poke starts another
                    return
                wake.clear()
            if self._buffered() < FULL and self._halt.wait(self._linger):
                return  # stopped while lingering: the caller writes what is left
            try:
                self._flush()
            except StoreUnavailable:
                pass  # kept buffered and logged once per outage by the buffer; retried after RETRY
            except Exception:
                logger.exception("identity store: writing buffered settlements failed")

    def at_exit(self) -> None:
        """Stop the thread and write what is left here (logged, not raised, if Redis is gone)."""
        self.stop()
        if self._buffered():
            try:
                self._flush()
            except Exception as error:
                logger.error("identity store: %d settlements could not be written at exit: %s",
                             self._buffered(), error)


def _stop_at_exit(ref: weakref.ref[BackgroundWriter]) -> None:
    writer = ref()  # weak: a store that is gone needs nothing at exit
    if writer is not None:
        writer.at_exit()
