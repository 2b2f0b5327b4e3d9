"""CPU µs per request in-process, K requests in flight, this tree against ``--before REV``, alternating rounds.

The HTTP runs (``bench.run``) take 5 s per app per round and move by 10-30 % between rounds; the
instruction counts (``bench.instructions``) are exact but blind to what the CPU does beyond
instructions. This is the quick middle: the ASGI app served in this machine's process (the driver
of ``bench.instructions``: each request a task, ``--in-flight`` of them at once, as a server with
that many connections), timed by the process's own CPU clock (``time.process_time``, so Redis's
work, in its own process, is not in it). Each round runs every tree once, in a rotated order; the
report gives each round and the median, and the ratio of the medians.

    .venv/bin/python -m bench.cpu --before daeea84                        # redis, 32 in flight, 7 rounds
    .venv/bin/python -m bench.cpu --before daeea84 --store memory --rounds 7
    .venv/bin/python -m bench.cpu --before daeea84 --no-gc               # the collector off in both

Each tree runs in a process of its own (``--child``), against one private ``redis-server`` (each
tree, round and run under its own key prefix).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .apps import private_redis, source_info
from .instructions import IN_FLIGHT_ENV, REDIS_URL_ENV, _asgi_requests
from .revisions import REPO, export

STORES = ("memory", "free", "redis")


def child(kind: str, count: int, collect: bool) -> None:
    """Serve ``count`` requests after a warm-up and print the CPU µs of each."""
    import gc

    serve = _asgi_requests(kind)
    serve(300)  # warm: caches filled, every code path imported
    if not collect:
        gc.disable()
    began = time.process_time()
    serve(count)
    print(f"{(time.process_time() - began) * 1e6 / count:.2f}")


def _run(tree: Path | None, kind: str, count: int, in_flight: int, collect: bool, prefix: str) -> float:
    env = dict(os.environ)
    env[IN_FLIGHT_ENV] = str(in_flight)
    env["IDM_BENCH_PREFIX"] = prefix
    env["PYTHONHASHSEED"] = "0"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree / "src") if tree else str(REPO / "src"), str(REPO),
                                                      env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "bench.cpu", "--child", kind, str(count), "1" if collect else "0"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind}: the child failed ({done.returncode}): {done.stderr[-2000:]}")
    return float(done.stdout.split()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", metavar="REV", help="also time src/ as committed at REV, in the same rounds")
    parser.add_argument("--store", default="redis", choices=STORES)
    parser.add_argument("--requests", type=int, default=20000, help="timed requests per run")
    parser.add_argument("--in-flight", type=int, default=32, help="requests served at once (tasks)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-gc", action="store_true", help="the garbage collector off while timed")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "COUNT", "GC"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2] == "1")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-src-") as tmp, contextlib.ExitStack() as stack:
        if args.store == "redis":
            os.environ[REDIS_URL_ENV] = stack.enter_context(private_redis())
        trees: dict[str, Path | None] = {"here": None}
        if args.before:
            label, tree = export(args.before, Path(tmp))
            trees[f"@{label}"] = tree
        timings: dict[str, list[float]] = {name: [] for name in trees}
        names = list(trees)
        for round_ in range(args.rounds):
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                prefix = f"idm-bench-cpu-{name.strip('@')}-{round_}"
                timings[name].append(_run(trees[name], args.store, args.requests, args.in_flight,
                                          not args.no_gc, prefix))
    print(f"{source_info()}; in-process CPU µs per request, store {args.store}, {args.in_flight} in flight, "
          f"{args.requests} requests a run, {args.rounds} rounds{', gc off' if args.no_gc else ''}\n")
    print("| tree | median µs/req | rounds |")
    print("|---|---:|---|")
    for name, values in timings.items():
        print(f"| {name} | {statistics.median(values):.1f} | {', '.join(f'{value:.1f}' for value in values)} |")
    if args.before:
        here, before = (statistics.median(values) for values in timings.values())
        print(f"\nratio here / {names[1]}: {here / before:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
