"""HTTP benchmark: each app in a server process of its own, loaded by wrk in alternating rounds."""

from __future__ import annotations

import argparse
import contextlib
import functools
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from . import gcstats, processes, redis_stats, report, revisions, servers, wrk
from .apps import RedisUnavailable, private_redis, redis_store_class, source_info
from .serve import default_http, default_loop
from .servers import SCENARIOS, SERVED_BY, App, Options, Server

KINDS = ("memory", "redis", "redis-lease")  # --store all
MORE_KINDS = ("free", "redis-plain", "redis-inline", "redis-wait", "redis-wait-admit")  # named only:
# bench/free_store.py (a store that costs nothing); Redis through redis-py alone (multiplex=False: no
# accelerated transport); Redis without the writer thread (writer_thread=False: a sync settlement is written
# by the thread that settles it); the WAIT guard on settlements, and on admissions too (Wait(1, 0.1); the
# private Redis gets a replica)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _connections(args: argparse.Namespace, scenario: str) -> int:
    return int(args.connections if SERVED_BY[scenario] == "uvicorn" else args.wsgi_connections)


def _setup(args: argparse.Namespace, loop: str, http_impl: str, pinning: str) -> str:
    served = []
    if {"asgi", "llm"} & set(args.scenarios):
        served.append(f"uvicorn {version('uvicorn')} --loop {loop} --http {http_impl}, 1 worker, no access log, "
                      f"{'gc.freeze() after start-up, ' if args.gc_freeze else ''}wrk -c{args.connections}")
    if {"flask", "django"} & set(args.scenarios):
        served.append(f"gunicorn {version('gunicorn')} 1 sync worker, wrk -c{args.wsgi_connections}")
    delay = f"; Redis behind a {args.redis_delay:g} ms-each-way delay proxy" if args.redis_delay else ""
    return (f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.python_implementation()} "
            f"{platform.python_version()}, {len(wrk.cpus())} CPUs ({_cpu_model()}); {'; '.join(served)}; wrk "
            f"-t{args.threads} -d{args.duration}s, {args.rounds} rounds, ~1 KB JSON body; {pinning}{delay}; "
            f"{source_info()}")


def _plan(args: argparse.Namespace, before: tuple[str, Path] | None) -> tuple[list[tuple[App, Path | None]], bool]:
    """The apps to run, each with the exported tree it runs (``None``: this one), and whether a Redis
    app was wanted but cannot run (a skip line is printed for each app left out)."""
    kinds = list(args.kinds)
    missing = False
    if any(kind.startswith("redis") for kind in kinds):
        try:
            redis_store_class()
        except RedisUnavailable as error:
            print(f"SKIPPED redis stores: {error}", flush=True)
            kinds, missing = [kind for kind in kinds if not kind.startswith("redis")], True
    sources: list[tuple[str | None, Path | None]] = [(None, None)]
    if before is not None:
        sources.append(before)
    planned: list[tuple[App, Path | None]] = []
    for revision, tree in sources:
        if "redis-lease" in kinds and (reason := servers.lease_unsupported(tree)):
            print(f"SKIPPED redis-lease{f'@{revision}' if revision else ''}: {reason}; it runs once "
                  "RedisStore has leasing and bench/apps.py passes it", flush=True)
            chosen = [kind for kind in kinds if kind != "redis-lease"]
        else:
            chosen = kinds
        for scenario in args.scenarios:
            planned += [(App(scenario, kind, revision), tree) for kind in chosen
                        if (revision is None or kind not in ("bare", "floor"))
                        and (kind != "floor" or scenario == "asgi")]
    return planned, missing


@contextlib.contextmanager
def _redis(args: argparse.Namespace, wanted: bool, cpus: str | None) -> Iterator[tuple[str | None, str | None]]:
    """(the URL Redis is read at for its counters, the URL the apps connect to: the delay proxy's
    with --redis-delay)."""
    if not wanted:
        yield None, None
        return
    with contextlib.ExitStack() as stack:
        replica = any(kind.startswith("redis-wait") for kind in args.kinds)  # WAIT needs a replica to answer
        direct = args.redis_url or stack.enter_context(private_redis(cpus, replica=replica))
        if not args.redis_delay:
            yield direct, direct
            return
        host_port = direct.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
        proxy = stack.enter_context(servers.helper("delay_proxy", ["--target", host_port, "--delay-ms",
                                                                   str(args.redis_delay)], cpus))
        yield direct, direct.replace(host_port, f"127.0.0.1:{proxy}", 1)


def _measure(server: Server, meter: redis_stats.Meter | None, *, seconds: int, args: argparse.Namespace,
             script: Path, cpus: str | None, counted: bool) -> wrk.Run:
    before = meter.snapshot() if meter and counted and server.app.uses_redis else None
    gc_before = gcstats.read(server.process.pid, server.gc_file) if counted and server.gc_file else None
    result = wrk.run(server.port, server.process.pid, script=script, cpus=cpus, seconds=seconds,
                     threads=args.threads, connections=_connections(args, server.app.scenario))
    server.sent += result.requests - result.non_2xx
    if counted:
        server.runs.append(result)
    if gc_before is not None and server.gc_file is not None:
        gc_after = gcstats.read(server.process.pid, server.gc_file, gc_before)
        if gc_after is not None:
            server.gc.append(gcstats.between(gc_before, gc_after, result.requests))
    if meter and before is not None:
        time.sleep(0.1)  # settlements the store writes behind, after the last answer
        server.redis.append(redis_stats.between(before, meter.snapshot(), result.requests))
    return result


def http_main(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        print("wrk not found: install it with `apt-get install -y wrk` (Debian/Ubuntu), then rerun.", file=sys.stderr)
        return 2
    server_cpus, other_cpus, pinning = wrk.pinning(not args.no_pin)
    loop, http_impl = args.loop or default_loop(), args.http or default_http()
    setup = _setup(args, loop, http_impl, pinning)
    print(setup, flush=True)
    started: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp, contextlib.ExitStack() as stack:
        directory = Path(tmp)
        script = wrk.script(directory)
        try:
            before = revisions.export(args.before, directory) if args.before else None
            planned, missing = _plan(args, before)
            counters, redis_url = stack.enter_context(
                _redis(args, any(app.uses_redis for app, _ in planned), other_cpus))
            meter = redis_stats.Meter(counters) if counters else None
            if meter:
                stack.callback(meter.close)
            upstream = None
            if "llm" in args.scenarios:
                upstream = f"http://127.0.0.1:{stack.enter_context(servers.helper('fake_llm', [], other_cpus))}"
            options = Options(loop, http_impl, redis_url, upstream, server_cpus, args.gc_freeze)
            for app, tree in planned:
                started.append(servers.start(app, options, directory, tree))
            measure = functools.partial(_measure, meter=meter, args=args, script=script, cpus=other_cpus)
            for server in started:  # warm-up, not counted
                if args.warmup > 0:
                    measure(server, seconds=args.warmup, counted=False)
            for number in range(args.rounds):
                # Rotate the order each round so no app always runs first or last.
                order = started[number % len(started):] + started[: number % len(started)]
                for server in order:
                    result = measure(server, seconds=args.duration, counted=True)
                    print(f"round {number + 1}/{args.rounds} {server.app.scenario:>6} {server.app.label:>11}: "
                          f"{result.rps:10,.0f} req/s  p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms  "
                          f"errors {result.errors}", flush=True)
            ok = _report(started, args, setup)
        except RedisUnavailable as error:
            print(f"redis store: {error}", file=sys.stderr)
            return 3
        finally:
            for server in started:
                processes.stop(server.process)
    if missing:
        print("redis stores not measured (see SKIPPED above)", file=sys.stderr)
        return 3
    return 0 if ok else 1


def _report(started: list[Server], args: argparse.Namespace, setup: str) -> bool:
    """Print the tables; ``False`` when a run had errors or a store missed requests."""
    lines: list[str] = []
    for scenario in args.scenarios:
        group = [server for server in started if server.app.scenario == scenario]
        if group:
            lines += ["", *report.scenario_table(scenario, group, args.rounds, _connections(args, scenario))]
    tables = report.redis_table(started)
    lines += ["", *tables] if tables else []
    if args.redis_delay:
        lines += ["", f"Latency with Redis {args.redis_delay:g} ms away each way (delay proxy), leasing on and off:",
                  *report.lease_latency(started, args.redis_delay)]
    lines += ["", *report.load_line(started), "", setup]
    checks, ok = report.usage_checks(started)
    lines += checks
    for scenario in args.scenarios:
        group = [server for server in started if server.app.scenario == scenario and server.app.revision is None]
        if not args.redis_delay:  # the targets are for Redis on the same machine
            lines += report.targets(scenario, group)
        if SERVED_BY[scenario] == "gunicorn":
            lines += report.sync_redis_over_memory(scenario, group, _connections(args, scenario))
    print("\n".join(lines))
    return ok and all(run.errors == 0 for server in started for run in server.runs)


def _parse(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--in-process", action="store_true", help="run bench/inprocess.py instead (no HTTP)")
    parser.add_argument("--at", metavar="REV", help="measure src/ as committed at REV (e.g. HEAD), not the work tree")
    parser.add_argument("--before", metavar="REV",
                        help="also run the store apps on src/ as committed at REV, in the same rounds (before/after)")
    parser.add_argument("--scenario", default="asgi",
                        help=f"comma-separated, of {', '.join(SCENARIOS)}, or all (default: asgi, the micro view)")
    parser.add_argument("--realistic", action="store_true", help="the same as --scenario llm")
    parser.add_argument("--store", default=None,
                        help=f"comma-separated, of {', '.join(KINDS)}, or all: the apps beside bare "
                             "(default: memory, or all with --redis-url or --redis-delay)")
    parser.add_argument("--redis-url", help="an existing Redis; without it Redis apps get a private redis-server")
    parser.add_argument("--redis-delay", type=float, metavar="MS",
                        help="put a proxy delaying each direction by MS ms between the apps and Redis")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per round (wrk takes whole seconds)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per app (0: none)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int,
                        help="wrk connections to uvicorn apps (default 32; 4 with --redis-delay, so that latency "
                             "is not all queueing)")
    parser.add_argument("--wsgi-connections", type=int, default=8, help="wrk connections to gunicorn apps")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), help="default: uvloop if installed")
    parser.add_argument("--http", choices=("h11", "httptools"), help="default: httptools if installed")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the servers and the rest to CPUs")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="uvicorn servers call gc.freeze() once their app is built (every app alike)")
    args, rest = parser.parse_known_args(argv)
    return parser, args, rest


def _choices(parser: argparse.ArgumentParser, given: str, allowed: tuple[str, ...], what: str,
             more: tuple[str, ...] = ()) -> list[str]:
    """The names given (``all``: every one of ``allowed``; ``more`` only when named)."""
    chosen = list(allowed) if given == "all" else [name.strip() for name in given.split(",") if name.strip()]
    if not chosen or any(name not in allowed + more for name in chosen):
        parser.error(f"{what}: one or more of {', '.join(allowed + more)}, comma-separated, or all")
    return list(dict.fromkeys(chosen))


def main(argv: list[str] | None = None) -> int:
    parser, args, rest = _parse(argv)
    if args.at:
        argv = list(sys.argv[1:] if argv is None else argv)
        index = argv.index("--at") if "--at" in argv else next(i for i, a in enumerate(argv) if a.startswith("--at="))
        del argv[index: index + (1 if argv[index].startswith("--at=") else 2)]
        return revisions.rerun_at(args.at, argv)
    if args.in_process:
        from . import inprocess

        shared = (["--store", args.store] if args.store else []) + (["--redis-url", args.redis_url]
                                                                     if args.redis_url else [])
        return inprocess.main([*rest, *shared])
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.scenarios = _choices(parser, "llm" if args.realistic else args.scenario, SCENARIOS, "--scenario")
    store = args.store or ("all" if args.redis_url or args.redis_delay else "memory")
    # floor (bench/floor.py: buffer, parse and replay the body, nothing else) is the reference beside bare
    args.kinds = ["bare", "floor", *_choices(parser, store, KINDS, "--store", MORE_KINDS)]
    args.connections = args.connections or (4 if args.redis_delay else 32)
    if args.redis_delay is not None and not 0 < args.redis_delay <= 1000:
        parser.error("--redis-delay: 0 < MS <= 1000")
    if not (1 <= args.rounds <= 20 and 1 <= args.duration <= 120 and 0 <= args.warmup <= 60):
        parser.error("rounds 1..20, duration 1..120 s, warm-up 0..60 s")
    return http_main(args)


if __name__ == "__main__":
    sys.exit(main())
