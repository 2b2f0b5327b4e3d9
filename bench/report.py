"""The HTTP run's report: one table per scenario, Redis's share, the usage check and the targets."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from . import gcstats, redis_stats
from .servers import Server, committed
from .wrk import Run, cpus

TITLES = {
    "asgi": "Starlette under uvicorn, micro view (reads the body, answers a small JSON)",
    "llm": "Starlette under uvicorn, realistic view (forwards the body to the fake LLM over HTTP, meters its reply)",
    "flask": "Flask under gunicorn (1 sync worker), IdentityWSGIMiddleware",
    "django": "Django under gunicorn (1 sync worker), identity_middleware.django.IdentityMiddleware",
}
# Lowest acceptable req/s ratio to bare, per (scenario, kind).
TARGETS = {("asgi", "memory"): 0.75, ("asgi", "redis"): 0.60}
SYNC_REDIS_OVER_MEMORY_US = 250  # the most the sync Redis path may add over the sync memory path


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _of(server: Server, value: Callable[[Run], float]) -> float:
    return median([value(run) for run in server.runs])


def rps(server: Server) -> float:
    return _of(server, lambda run: run.rps)


def cpu_us(server: Server) -> float:
    return _of(server, lambda run: run.cpu_us)


def _bare(servers: Sequence[Server]) -> Server | None:
    return next((server for server in servers if server.app.kind == "bare"), None)


def scenario_table(scenario: str, servers: Sequence[Server], rounds: int, connections: int) -> list[str]:
    bare = _bare(servers)
    collected = any(server.gc for server in servers)
    lines = [f"### {scenario}: {TITLES[scenario]}, wrk -c{connections}", "",
             f"| app | req/s (median of {rounds}) | rounds req/s | p50 ms | p99 ms | × bare | "
             "server CPU µs/req | × bare by CPU | server busy | errors |"
             + (" full GCs /100k req | GC ms /1k req |" if collected else ""),
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if collected else "")]
    for server in servers:
        ratio = f"{rps(server) / rps(bare):.2f}" if bare else "-"
        by_cpu = f"{cpu_us(bare) / cpu_us(server):.2f}" if bare and cpu_us(server) else "-"
        lines.append(
            f"| {server.app.label} | {rps(server):,.0f} | {', '.join(f'{run.rps:,.0f}' for run in server.runs)} | "
            f"{_of(server, lambda run: run.p50_ms):.2f} | {_of(server, lambda run: run.p99_ms):.2f} | {ratio} | "
            f"{cpu_us(server):.0f} | {by_cpu} | {_of(server, lambda run: run.busy):.0%} | "
            f"{sum(run.errors for run in server.runs)} |" + (_gc_cells(server) if collected else ""))
    if collected:
        lines += ["", "GC: the garbage collector's collections of generation 2 (each walks the whole heap) and "
                  "the time all its collections paused the server, over the measured rounds (bench/gcstats.py)."]
    return lines


def _gc_cells(server: Server) -> str:
    if not server.gc:
        return " - | - |"
    usage = gcstats.total(server.gc)
    return f" {usage.full_per_100k:.1f} | {usage.ms_per_1k:.1f} |"


def redis_table(servers: Sequence[Server]) -> list[str]:
    """Redis's work per request of each Redis app, and how many such app processes one Redis core serves."""
    users = [server for server in servers if server.redis]
    if not users:
        return []
    lines = ["Redis, per request (`INFO commandstats` and `INFO cpu` before and after each round):", "",
             "| scenario | app | commands/req | of which scripts | Redis CPU µs/req | commandstats µs/req "
             "(scripts + other) | app processes one Redis core serves |",
             "|---|---|---:|---:|---:|---:|---:|"]
    tops = []
    for server in users:
        usage = redis_stats.total(server.redis)
        per_core = 1e6 / usage.cpu_us if usage.cpu_us else float("inf")
        processes = per_core / rps(server)
        lines.append(f"| {server.app.scenario} | {server.app.label} | {usage.commands:.2f} | {usage.scripts:.2f} | "
                     f"{usage.cpu_us:.1f} | {usage.script_usec:.1f} + {usage.other_usec:.1f} | {processes:.1f} |")
        tops.append(f"{server.app.scenario} {server.app.label}: {usage.top()}")
    return [*lines, "", "commands per request (scripts' own commands included): " + "; ".join(tops)]


def sync_redis_over_memory(scenario: str, servers: Sequence[Server], connections: int) -> list[str]:
    """What each sync Redis path (default, leasing) adds over the sync memory path, three ways, and
    the target's verdict."""
    by_kind = {server.app.label: server for server in servers}
    memory = by_kind.get("memory")
    if memory is None:
        return []
    lines = []
    for label, name in (("redis", "Redis"), ("redis-plain", "Redis through redis-py alone"),
                        ("redis-inline", "Redis without the writer thread"), ("redis-lease", "Redis with leasing")):
        redis = by_kind.get(label)
        if redis is None:
            continue
        cpu = cpu_us(redis) - cpu_us(memory)
        # One sync worker serves one request at a time: wall time per request is its service time.
        wall = 1e6 / rps(redis) - 1e6 / rps(memory)
        p50 = (_of(redis, lambda run: run.p50_ms) - _of(memory, lambda run: run.p50_ms)) * 1000
        verdict = "MET" if wall <= SYNC_REDIS_OVER_MEMORY_US else "NOT MET"
        lines.append(f"{scenario}: sync {name} over sync memory: {cpu:+.0f} server CPU µs/req, {wall:+.0f} µs of "
                     f"service time per request (1/req/s), p50 {p50:+.0f} µs (≈ {connections} × the service time: "
                     f"requests queue for the one worker) -> target <= {SYNC_REDIS_OVER_MEMORY_US} µs: {verdict}")
    return lines


def lease_latency(servers: Sequence[Server], delay_ms: float) -> list[str]:
    """With a delay proxy in front of Redis: each Redis app's latency, leasing on and off, against memory's."""
    lines = []
    for server in servers:
        if server.app.kind not in ("memory", "redis", "redis-plain", "redis-inline", "redis-lease"):
            continue
        p50, p99 = _of(server, lambda run: run.p50_ms), _of(server, lambda run: run.p99_ms)
        line = f"{server.app.scenario} {server.app.label}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, {rps(server):,.0f} req/s"
        memory = next((other for other in servers if other.app.scenario == server.app.scenario
                       and other.app.label == "memory"), None)
        if server.app.uses_redis and memory is not None:
            line += (f"; over memory: p50 {p50 - _of(memory, lambda run: run.p50_ms):+.2f} ms, "
                     f"p99 {p99 - _of(memory, lambda run: run.p99_ms):+.2f} ms (one round trip is {2 * delay_ms:g} ms)")
        lines.append(line)
    return lines


def usage_checks(servers: Sequence[Server]) -> tuple[list[str], bool]:
    """Each store committed at least the 2xx answers its server gave (``ok`` / ``MISSING USAGE``)."""
    lines, ok = [], True
    for server in servers:
        if server.app.kind in ("bare", "floor"):
            continue
        if server.app.kind == "free":
            lines.append(f"{server.app.scenario} {server.app.label} store commits nothing (bench/free_store.py)")
            continue
        stats = committed(server.port)
        counted = stats.get("requests")
        check = "ok" if isinstance(counted, int) and counted >= server.sent else "MISSING USAGE"
        ok = ok and check == "ok"
        lines.append(f"{server.app.scenario} {server.app.label} store committed {counted} requests, cost "
                     f"${stats.get('cost')} (wrk + warm-up completed {server.sent} with 2xx): {check}")
    return lines, ok


def targets(scenario: str, servers: Sequence[Server]) -> list[str]:
    bare = _bare(servers)
    lines = []
    for server in servers:
        target = TARGETS.get((scenario, server.app.label))
        if target is None or bare is None:
            continue
        ratio = rps(server) / rps(bare)
        verdict = "MET" if ratio >= target else "NOT MET"
        lines.append(f"target {scenario} {server.app.label} store >= {target:.2f}× bare: {ratio:.2f}× by req/s -> "
                     f"{verdict} ({cpu_us(bare) / cpu_us(server):.2f}× by server CPU per request)")
    return lines


def load_line(servers: Sequence[Server]) -> list[str]:
    loads = [run.load for server in servers for run in server.runs]
    if not loads:
        return []
    return [f"machine 1-min load average during the rounds: {min(loads):.1f} to {max(loads):.1f} "
            f"({len(cpus())} CPUs; wrk and the server account for about 2, Redis and the helpers for more)"]
