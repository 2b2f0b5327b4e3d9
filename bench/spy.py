"""Where a Starlette app's server time goes under HTTP load: py-spy samples the uvicorn process.

Issue 13 asked why the MemoryStore path adds ~23 µs in-process and ~60 µs under HTTP. The
in-process modes cannot say (they leave uvicorn, the socket and 31 other requests out); this one
serves each app as ``bench.run`` does (uvicorn, one worker, pinned to one CPU, wrk -c32 on the
other), records the server's Python stacks with py-spy while wrk loads it, and divides each
frame's samples by the requests served: µs per request by where the CPU was (the middleware's
frames, the view's, Starlette's, uvicorn's, asyncio's, the JSON module's, the rest), then the
frames that differ most between the first app and each other one. Self time only: a frame's
callees are counted where they run.

    .venv/bin/pip install py-spy
    .venv/bin/python -m bench.spy                              # bare against MemoryStore
    .venv/bin/python -m bench.spy --apps memory --before ed54c1c

Sampling is wall-clock, of the server's thread while py-spy does not count it idle: time in the
kernel's socket calls and between loop iterations is partly left out, so the totals come to about
half of the server CPU per request ``bench.run`` measures. Read the rows as where Python time goes,
and compare apps within a run (±1 µs per category between runs here).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import revisions, servers, wrk
from .processes import stop
from .serve import default_http, default_loop

CATEGORIES = (("middleware", "identity_middleware"), ("view", "bench/apps"), ("starlette", "starlette"),
              ("uvicorn", "uvicorn"), ("asyncio", "asyncio"), ("json", "json/"))
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(:\d+)?\)$")
_SHORT = re.compile(r".*/(site-packages|python3\.\d+|src)/")

Profile = collections.Counter[str]


def _py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def frame_name(frame: str) -> str:
    """``function (file)``, the file shortened to its package path and without the line."""
    found = _FRAME.match(frame)
    if found is None:
        return frame
    return f"{found['function']} ({_SHORT.sub('', found['file'])})"


def category(name: str) -> str:
    return next((label for label, marker in CATEGORIES if marker in name), "other")


def self_samples(raw: str) -> Profile:
    """Samples per leaf frame in py-spy's raw (collapsed) output."""
    leaves: Profile = collections.Counter()
    for line in raw.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            leaves[frame_name(stack.split(";")[-1])] += int(count)
    return leaves


def sample(app: servers.App, options: servers.Options, directory: Path, before: Path | None, *, script: Path,
           client_cpus: str | None, seconds: int, rate: int, spy: str) -> tuple[Profile, float]:
    """µs per request of each leaf frame of ``app``'s server under wrk, and its req/s."""
    server = servers.start(app, options, directory, before)
    try:
        wrk.run(server.port, server.process.pid, script=script, cpus=client_cpus, seconds=3, threads=2,
                connections=32)  # warm-up
        out = directory / f"spy-{app.label}.txt"
        spying = subprocess.Popen([spy, "record", "--pid", str(server.process.pid), "--duration", str(seconds),
                                   "--rate", str(rate), "--format", "raw", "--nonblocking", "--output", str(out)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run = wrk.run(server.port, server.process.pid, script=script, cpus=client_cpus, seconds=seconds,
                      threads=2, connections=32)
        if spying.wait(timeout=seconds + 60) != 0 or not out.exists():
            raise RuntimeError(f"py-spy failed on {app.label} (ptrace allowed? try as root)")
    finally:
        stop(server.process)
    leaves = self_samples(out.read_text())
    per_request = 1e6 / rate / (run.rps * seconds)  # µs of one sample, shared by the requests served
    return collections.Counter({name: count * per_request for name, count in leaves.items()}), run.rps


def report(labels: list[str], profiles: list[Profile], rps: list[float], top: int) -> None:
    print("| µs per request (self time) | " + " | ".join(labels) + " |")
    print("|---|" + "---:|" * len(labels))
    print("| req/s | " + " | ".join(f"{value:,.0f}" for value in rps) + " |")
    by_category: list[Profile] = [collections.Counter() for _ in profiles]
    for totals, profile in zip(by_category, profiles, strict=True):
        for name, value in profile.items():
            totals[category(name)] += value
    for label, _ in (*CATEGORIES, ("other", "")):
        print(f"| {label} | " + " | ".join(f"{totals[label]:.1f}" for totals in by_category) + " |")
    print("| **all** | " + " | ".join(f"**{sum(profile.values()):.1f}**" for profile in profiles) + " |")
    first = profiles[0]
    for label, profile in zip(labels[1:], profiles[1:], strict=True):
        print(f"\nframes that differ most, {labels[0]} -> {label} (µs per request):\n")
        names = sorted(set(first) | set(profile), key=lambda name: -abs(profile[name] - first[name]))
        for name in names[:top]:
            print(f"  {first[name]:6.1f} -> {profile[name]:6.1f}  {profile[name] - first[name]:+6.1f}  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", default="bare,memory", help="comma-separated, of bare, floor, memory")
    parser.add_argument("--before", metavar="REV", help="then each app again on src/ as committed at REV")
    parser.add_argument("--seconds", type=int, default=10, help="sampled seconds per app")
    parser.add_argument("--rate", type=int, default=400, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=15, help="frames listed per comparison")
    args = parser.parse_args(argv)
    spy = _py_spy()
    if spy is None or shutil.which("wrk") is None:
        print("needs py-spy and wrk: .venv/bin/pip install py-spy; apt-get install -y wrk", file=sys.stderr)
        return 3
    kinds = [kind for kind in args.apps.split(",") if kind]
    if unknown := set(kinds) - {"bare", "floor", "memory"}:
        parser.error(f"unknown app {sorted(unknown)}")
    server_cpus, client_cpus, _ = wrk.pinning(True)
    options = servers.Options(default_loop(), default_http(), None, None, server_cpus)
    with tempfile.TemporaryDirectory(prefix="bench-spy-") as tmp:
        directory = Path(tmp)
        script = wrk.script(directory)
        before = revisions.export(args.before, directory) if args.before else None
        apps: list[tuple[servers.App, Path | None]] = [(servers.App("asgi", kind), None) for kind in kinds]
        if before is not None:
            apps += [(servers.App("asgi", kind, before[0]), before[1]) for kind in kinds]
        results = [sample(app, options, directory, tree, script=script, client_cpus=client_cpus,
                          seconds=args.seconds, rate=args.rate, spy=spy) for app, tree in apps]
    report([app.label for app, _ in apps], [profile for profile, _ in results], [rps for _, rps in results],
           args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
