"""Waiting for a bench process to listen, and stopping it: the servers, redis-server and the helpers."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path


def wait_listening(port: int, process: subprocess.Popen[bytes], what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + 30
    while True:  # bounded: 30 s to come up
        if process.poll() is not None:
            output = log.read_text(errors="replace") if log else ""
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{output}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen within 30 s") from None
            time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
