"""Scripts for a child process that serves the FastAPI example over a real socket (its modules are
top-level ``app`` and ``model``, as when it is run; the example's directory is ``sys.argv[1]``)."""

from __future__ import annotations

import os

# A bare environment, as a new user's shell has; PYTHONPATH kept so that a worktree's sources are the ones run.
ENV = {"PATH": "/usr/bin:/bin", **{name: os.environ[name] for name in ("PYTHONPATH",) if name in os.environ}}

# Defines ``app``, ``server``, ``thread`` and ``port``: uvicorn (with the app's lifespan) in a thread.
SERVE_EXAMPLE = """
import socket, sys, threading, time
sys.path.insert(0, sys.argv[1])
import uvicorn
from app import app
with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]
server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
thread = threading.Thread(target=server.run, daemon=True)
thread.start()
while not server.started: time.sleep(0.05)
"""

# A daemon thread still in its event loop at interpreter exit can crash CPython (SIGSEGV): joined.
STOP_EXAMPLE = """
server.should_exit = True
thread.join(10)
"""
