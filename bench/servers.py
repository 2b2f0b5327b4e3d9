"""The processes of an HTTP run: each app's server (uvicorn or gunicorn), the helpers, and their lifetimes."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import gcstats
from .apps import CHAT_PATH, IDENTITIES, STATS_PATH, chat_body, free_port
from .processes import stop, wait_listening
from .redis_stats import Usage
from .wrk import Run, pinned

REPO = Path(__file__).resolve().parent.parent
LEASE_ENV = "IDM_BENCH_LEASE"  # bench/apps.py passes lease= to RedisStore when it is "1"
PLAIN_ENV = "IDM_BENCH_PLAIN"  # ... and multiplex=False (redis-py's transport alone) when this is "1"
INLINE_ENV = "IDM_BENCH_INLINE"  # ... and writer_thread=False (sync settlements written inline) when "1"
WAIT_ENV = "IDM_BENCH_WAIT"  # ... and wait=Wait(1, 0.1) (settlements), with admissions=True when "admit"
PREFIX_ENV = "IDM_BENCH_PREFIX"
SCENARIOS = ("asgi", "llm", "flask", "django")
SERVED_BY = {"asgi": "uvicorn", "llm": "uvicorn", "flask": "gunicorn", "django": "gunicorn"}


@dataclass(frozen=True)
class App:
    """One measured app: a scenario (framework and view), a store kind, and the src/ it runs."""

    scenario: str  # asgi (Starlette micro view), llm (Starlette forwarding to an upstream), flask, django
    kind: str  # bare, memory, redis, redis-lease, redis-plain, redis-inline, redis-wait, redis-wait-admit
    revision: str | None = None  # run.py --before: the old revision's short sha

    @property
    def label(self) -> str:
        return self.kind + (f"@{self.revision}" if self.revision else "")

    @property
    def uses_redis(self) -> bool:
        return self.kind.startswith("redis")


@dataclass
class Server:
    app: App
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    runs: list[Run] = field(default_factory=list)  # the measured rounds
    redis: list[Usage] = field(default_factory=list)  # Redis's work in each measured round
    sent: int = 0  # every request this server answered 2xx to, warm-up and probes included
    gc_file: Path | None = None  # where a uvicorn server writes its garbage collector's totals
    gc: list[gcstats.Usage] = field(default_factory=list)  # the collector's work in each measured round


@dataclass(frozen=True)
class Options:
    """How every app of a run is served."""

    loop: str
    http: str
    redis_url: str | None  # what the apps connect to (through the delay proxy with --redis-delay)
    upstream: str | None  # the fake LLM's base URL (scenario llm)
    cpus: str | None  # the CPUs the servers are pinned to
    gc_freeze: bool = False  # uvicorn servers call gc.freeze() once their app is built


def _command(app: App, port: int, options: Options) -> tuple[list[str], dict[str, str]]:
    """The server's command line and environment."""
    env = dict(os.environ)
    env["IDM_BENCH_APP"] = "redis" if app.uses_redis else app.kind
    if options.redis_url:
        env["IDM_BENCH_REDIS_URL"] = options.redis_url
    # Keys of its own per scenario and per leasing, so each store's committed count is its own.
    env[PREFIX_ENV] = "idm-bench" + ("" if app.scenario == "asgi" else f"-{app.scenario}")
    if app.kind == "redis-lease":
        env[LEASE_ENV] = "1"
        env[PREFIX_ENV] += "-lease"
    if app.kind == "redis-plain":
        env[PLAIN_ENV] = "1"
        env[PREFIX_ENV] += "-plain"
    if app.kind == "redis-inline":
        env[INLINE_ENV] = "1"
        env[PREFIX_ENV] += "-inline"
    if app.kind.startswith("redis-wait"):
        env[WAIT_ENV] = "admit" if app.kind == "redis-wait-admit" else "settle"
        env[PREFIX_ENV] += f"-wait-{env[WAIT_ENV]}"
    if app.scenario in ("asgi", "llm"):
        command = [sys.executable, "-m", "bench.serve", "--app", env["IDM_BENCH_APP"], "--port", str(port),
                   "--loop", options.loop, "--http", options.http]
        if options.redis_url:
            command += ["--redis-url", options.redis_url]
        if app.scenario == "llm":
            assert options.upstream
            command += ["--upstream", options.upstream]
        if options.gc_freeze:
            command.append("--gc-freeze")
    else:
        target = "bench.wsgi_apps:create()"
        if app.scenario == "django":
            env["DJANGO_SETTINGS_MODULE"] = "bench.django_site"
            target = "django.core.wsgi:get_wsgi_application()"
        command = [sys.executable, "-m", "gunicorn", "--workers", "1", "--worker-class", "sync", "--bind",
                   f"127.0.0.1:{port}", "--log-level", "warning", *_gunicorn_quiet(), target]
    return command, env


def _gunicorn_quiet() -> list[str]:
    """gunicorn 24+ opens a control socket at one fixed path per user; several servers would share it."""
    from gunicorn.config import KNOWN_SETTINGS  # type: ignore[import-untyped]

    return ["--no-control-socket"] if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS) else []


def start(app: App, options: Options, directory: Path, before: Path | None = None) -> Server:
    """Start ``app``'s server and check it answers a chat POST with 200; ``before`` is an exported
    tree whose src/ it runs instead of the work tree's (run.py --before)."""
    port = free_port()
    command, env = _command(app, port, options)
    if before is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(before / "src"), str(REPO)])
        env[PREFIX_ENV] += f"-{app.revision}"
    log = directory / f"server-{app.scenario}-{app.label}.log"
    gc_file = directory / f"gc-{app.scenario}-{app.label}.json" if app.scenario in ("asgi", "llm") else None
    if gc_file is not None:
        env[gcstats.ENV] = str(gc_file)
    with log.open("wb") as out:
        process = subprocess.Popen(pinned(options.cpus, command), cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                   env=env)
    server = Server(app, port, process, log, gc_file=gc_file)
    try:
        wait_listening(port, process, f"{app.scenario} {app.label}", log)
        status = post(port, chat_body(IDENTITIES[0]))
        if status != 200:
            raise RuntimeError(f"{app.label} answered {status} to a chat POST:\n{log.read_text(errors='replace')}")
    except BaseException:
        stop(process)
        raise
    server.sent += 1
    return server


@contextlib.contextmanager
def helper(module: str, arguments: Sequence[str], cpus: str | None) -> Iterator[int]:
    """A bench helper (``python -m bench.<module> --port N ...``) on a free port, stopped on exit."""
    port = free_port()
    command = pinned(cpus, [sys.executable, "-m", f"bench.{module}", "--port", str(port), *arguments])
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)  # its errors go to our stderr
    try:
        wait_listening(port, process, module)
        yield port
    finally:
        stop(process)


def lease_unsupported(before: Path | None = None) -> str | None:
    """Why ``redis-lease`` cannot run on this src/ (or the exported ``before`` tree's), or ``None``.

    Asked in a fresh interpreter with the server's PYTHONPATH, so ``--before`` trees answer for themselves.
    """
    if LEASE_ENV not in (REPO / "bench" / "apps.py").read_text():
        return f"bench/apps.py does not read {LEASE_ENV} yet"
    probe = ("import inspect\nimport identity_middleware.stores as stores\n"
             "from identity_middleware.stores import RedisStore\n"
             "print(hasattr(stores, 'RedisOptions') or any('lease' in inspect.signature(f).parameters"
             " for f in (RedisStore, RedisStore.from_url)))")
    env = dict(os.environ)
    if before is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(before / "src"), str(REPO)])
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    if done.stdout.strip() == "True":
        return None
    return "RedisStore has no lease parameter" if done.returncode == 0 else f"RedisStore: {done.stderr.strip()[-200:]}"


def post(port: int, body: bytes) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", CHAT_PATH, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def committed(port: int) -> dict[str, object]:
    """What the app's store committed (its ``GET /bench/stats``)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", STATS_PATH)
        return dict(json.loads(connection.getresponse().read()))
    finally:
        connection.close()
