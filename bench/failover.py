"""Failover drill (issue 28): Sentinel and Cluster switch masters under load; what was served, what Redis kept.

    .venv/bin/python -m bench.failover              # every scenario under both outage policies (about 5 min)
    .venv/bin/python -m bench.failover --quick      # 12 s per run, the fault at 4 s
    .venv/bin/python -m bench.failover sentinel-kill cluster-kill --policy open

Not a test: it prints what happened. Each run gets fresh servers on loopback (free ports, temp dirs):

- Sentinel: a master, one replica, 3 Sentinels (quorum 2, ``down-after-milliseconds 1000``); the
  store's URL lists every Sentinel.
- Cluster: 3 masters and 3 replicas (``cluster-node-timeout 2000``, ``cluster-require-full-coverage no``).

Scenarios (the fault at 8 s of 20):

- ``sentinel-kill``: SIGKILL of the master; Sentinel promotes the replica.
- ``sentinel-planned``: ``SENTINEL FAILOVER``; the old master is demoted seconds later.
- ``sentinel-noreplicas``: ``min-replicas-to-write 1`` on both, the replica killed; it is started
  again 4 s later (the master refuses writes meanwhile: NOREPLICAS).
- ``cluster-kill``: SIGKILL of the master holding the registry of global budgets; its replica is
  promoted after the node timeout.
- ``cluster-planned``: ``CLUSTER FAILOVER`` on that master's replica.

Load: one uvicorn app (``IdentityMiddleware`` on a ``RedisStore``, the policy under test), 16
keep-alive clients, 20 identities recording $0.001 per request, and one capped identity on a $0.50
daily budget behind ``@budgeted`` (estimate $0.001) that sends a quarter of the requests (it reaches
its cap before the fault). The app is stopped with SIGTERM (its lifespan
shutdown writes what it buffered) before Redis is read. Printed per scenario and policy: tracked and
untracked 200s, other answers by status, answers not tracked for identities the fault does not
concern (the Cluster's other masters), seconds to recover (from the fault to the last answer that
was neither tracked nor a 429), requests recorded in Redis against tracked 200s (lost, double), the
capped identity's recorded spend and what it was served, and the app's warnings and errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from .drill import Row, table

IDS = tuple(f"fo_{n}" for n in range(20))
CAPPED = "fo_capped"
COST = Decimal("0.001")  # recorded per request; the capped identity's estimate too
CAP = Decimal("0.50")
PREFIX = "fo"
SERVICE = "mymaster"
WORKERS = 16
NODE_TIMEOUT_MS = 2000
DOWN_AFTER_MS = 1000


# -- the app under test ------------------------------------------------------------------------
def build_app(url: str, policy: str, options: dict[str, Any]) -> object:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from identity_middleware import IdentityMiddleware, budgeted, current_identity, record_usage
    from identity_middleware.stores import RedisStore

    async def chat(request: Request) -> JSONResponse:
        tracked = current_identity() is not None
        record_usage(COST)
        return JSONResponse({"tracked": tracked})

    capped = budgeted(estimate=str(COST))(chat)
    store = RedisStore.from_url(url, prefix=PREFIX, socket_timeout=1.0, **options)
    routes = [Route("/chat", chat, methods=["POST"]), Route("/capped", capped, methods=["POST"])]
    return Starlette(routes=routes, middleware=[Middleware(IdentityMiddleware, store=store, on_store_error=policy)])


def serve(port: int, url: str, policy: str, wait: str) -> None:
    import uvicorn

    from .serve import default_http, default_loop

    options: dict[str, Any] = {}
    if wait:
        from identity_middleware.stores.redis.options import Wait

        replicas, timeout = wait.split(":")
        options["wait"] = Wait(int(replicas), float(timeout))
    uvicorn.run(build_app(url, policy, options), host="127.0.0.1", port=port, loop=default_loop(),  # type: ignore[arg-type]
                http=default_http(), access_log=False, log_level="warning")


# -- servers -------------------------------------------------------------------------------------
def free_port(*, bus: bool = False) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not bus:
            return port
        if port + 10000 < 65536:
            with socket.socket() as sock, contextlib.suppress(OSError):
                sock.bind(("127.0.0.1", port + 10000))
                return port


def admin(port: int) -> Any:
    import redis

    return redis.Redis(port=port, decode_responses=True, socket_timeout=5)


def until(what: str, check: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(Exception):
            if check():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {seconds} s")
        time.sleep(0.05)


class Node:
    """One redis-server (or Sentinel) process on a free port in a directory of its own."""

    def __init__(self, root: Path, name: str, *args: str, bus: bool = False, sentinel: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found (apt-get install -y redis-server)")
        self.binary = binary
        self.dir = root / name
        self.dir.mkdir()
        self.port = free_port(bus=bus)
        self.args = args
        self.sentinel = sentinel  # the config of a Sentinel
        self.process = self.start()

    def start(self, *more: str) -> subprocess.Popen[bytes]:
        log = str(self.dir / "redis.log")
        if self.sentinel is not None:
            config = self.dir / "sentinel.conf"
            config.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\nlogfile {log}\n{self.sentinel}")
            command = [self.binary, str(config), "--sentinel"]
        else:
            command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                       "--save", "", "--appendonly", "no", "--logfile", log, *self.args, *more]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        until(f"redis-server on {self.port}", lambda: admin(self.port).ping())
        self.process = process
        return process

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def info(self, section: str) -> dict[str, Any]:
        with admin(self.port) as client:
            return client.info(section)  # type: ignore[no-any-return]


class Sentinels:
    """A master, one replica and 3 Sentinels (quorum 2, down-after 1000 ms)."""

    kind = "sentinel"

    def __init__(self, root: Path) -> None:
        self.master = Node(root, "master")
        self.replica = Node(root, "replica", "--replicaof", "127.0.0.1", str(self.master.port))
        until("the replica's sync", lambda: self.replica.info("replication")["master_link_status"] == "up")
        conf = (f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} 10000\nsentinel parallel-syncs {SERVICE} 1\n")
        self.sentinels = [Node(root, f"sentinel{n}", sentinel=conf) for n in range(3)]
        for each in self.sentinels:
            until("the Sentinels to know the replica and each other", lambda each=each: self._knows(each.port))
        self.url = "redis+sentinel://" + ",".join(f"127.0.0.1:{each.port}" for each in self.sentinels) + f"/{SERVICE}"
        self.nodes = [self.master, self.replica, *self.sentinels]

    def _knows(self, port: int) -> bool:
        with admin(port) as client:
            state = client.execute_command("SENTINEL", "MASTER", SERVICE)
        fields = dict(zip(state[::2], state[1::2], strict=False)) if isinstance(state, list) else state
        return int(fields["num-slaves"]) == 1 and int(fields["num-other-sentinels"]) == 2

    def master_port(self) -> int:
        with admin(self.sentinels[0].port) as client:
            return int(client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)[1])

    def affected(self) -> set[str] | None:
        return None  # every identity is on the one master


class Cluster:
    """3 masters and 3 replicas (node timeout 2000 ms, cluster-require-full-coverage no)."""

    kind = "cluster"

    def __init__(self, root: Path) -> None:
        options = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                   "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--cluster-require-full-coverage", "no")
        self.nodes = [Node(root, f"node{n}", *options, bus=True) for n in range(6)]
        cli = shutil.which("redis-cli") or "redis-cli"
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{node.port}" for node in self.nodes),
                        "--cluster-replicas", "1", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        until("cluster_state:ok", lambda: all("cluster_state:ok" in admin(node.port).execute_command("CLUSTER", "INFO")
                                              for node in self.nodes))
        until("the replicas' sync", lambda: all(node.info("replication").get("master_link_status", "up") == "up"
                                                for node in self.nodes))
        self.url = f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def node(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)

    def master_of(self, key: str) -> Node:
        with admin(self.nodes[0].port) as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return self.node(int(master[1]))
        raise RuntimeError(f"no master serves {key}")

    def replica_of(self, master: Node) -> Node:
        for node in self.nodes:
            info = node.info("replication")
            if info["role"] == "slave" and int(info["master_port"]) == master.port:
                return node
        raise RuntimeError(f"no replica of {master.port}")

    def registry_master(self) -> Node:
        return self.master_of(f"{PREFIX}:{{budgets}}:defs")

    def affected(self) -> set[str] | None:
        from identity_middleware.stores.redis.keys import identity_tag

        lost = self.registry_master()
        return {user for user in (*IDS, CAPPED) if self.master_of(f"{{{identity_tag(user)}}}") is lost}


Topology = Sentinels | Cluster


# -- scenarios ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    kind: str  # sentinel or cluster
    fault: Callable[[Any], None]
    heal: Callable[[Any], None] | None = None  # run HEAL seconds after the fault
    prepare: Callable[[Any], None] | None = None  # before the load


def sentinel_failover(topology: Sentinels) -> None:
    old = topology.master_port()
    with admin(topology.sentinels[0].port) as client:
        until("SENTINEL FAILOVER accepted", lambda: client.execute_command("SENTINEL", "FAILOVER", SERVICE), 30)
    until("the switch", lambda: topology.master_port() != old, 30)


def replicas_required(topology: Sentinels) -> None:
    for node in (topology.master, topology.replica):
        with admin(node.port) as client:
            client.config_set("min-replicas-to-write", 1)
            client.config_set("min-replicas-max-lag", 10)


def replica_back(topology: Sentinels) -> None:
    topology.replica.start("--min-replicas-to-write", "1", "--min-replicas-max-lag", "10")
    until("the master's replica back", lambda: int(topology.master.info("replication")["min_slaves_good_slaves"]) >= 1)


def cluster_failover(topology: Cluster) -> None:
    master = topology.registry_master()
    replica = topology.replica_of(master)
    with admin(replica.port) as client:
        client.execute_command("CLUSTER", "FAILOVER")
    until("the replica's promotion", lambda: replica.info("replication")["role"] == "master", 30)


SCENARIOS: dict[str, Scenario] = {
    "sentinel-kill": Scenario("sentinel", lambda topology: topology.master.kill()),
    "sentinel-planned": Scenario("sentinel", sentinel_failover),
    "sentinel-noreplicas": Scenario("sentinel", lambda topology: topology.replica.kill(), replica_back,
                                    replicas_required),
    "cluster-kill": Scenario("cluster", lambda topology: topology.registry_master().kill()),
    "cluster-planned": Scenario("cluster", cluster_failover),
}


# -- load and reconciliation ---------------------------------------------------------------------------
@dataclass
class Tally:
    answers: list[tuple[float, str, str, bool]] = field(default_factory=list)  # (when, identity, status, tracked)
    fault_at: float = 0.0


async def load(port: int, seconds: float, tally: Tally) -> None:
    deadline = time.monotonic() + seconds

    async def worker(number: int, client: httpx.AsyncClient) -> None:
        n = number
        while time.monotonic() < deadline:
            n += WORKERS
            # A quarter of the requests are the capped identity's: it reaches its cap before the fault.
            user = CAPPED if n % 4 == 0 else IDS[n // 4 % len(IDS)]
            path = "/capped" if user == CAPPED else "/chat"
            body = {"identity": {"id": user}, "messages": [{"role": "user", "content": "hi"}]}
            try:
                response = await client.post(f"http://127.0.0.1:{port}{path}", json=body)
            except httpx.HTTPError:
                tally.answers.append((time.monotonic(), user, "no answer", False))
                await asyncio.sleep(0.05)
                continue
            tracked = response.status_code == 200 and bool(response.json()["tracked"])
            tally.answers.append((time.monotonic(), user, str(response.status_code), tracked))

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=WORKERS)) as client:
        await asyncio.gather(*(worker(number, client) for number in range(WORKERS)))


async def under_load(port: int, topology: Topology, scenario: Scenario, seconds: float, fault_at: float,
                     heal_after: float, tally: Tally) -> None:
    async def fault() -> None:
        await asyncio.sleep(fault_at)
        tally.fault_at = time.monotonic()
        await asyncio.to_thread(scenario.fault, topology)
        if scenario.heal is not None:
            await asyncio.sleep(max(0.0, heal_after - (time.monotonic() - tally.fault_at)))
            await asyncio.to_thread(scenario.heal, topology)

    await asyncio.gather(load(port, seconds, tally), fault())


def prepare_identities(url: str) -> None:
    from identity_middleware import Budget, IdentityInput, Period
    from identity_middleware.stores import RedisStore

    store = RedisStore.from_url(url, prefix=PREFIX)
    try:
        for user in (*IDS, CAPPED):
            store.create(IdentityInput(id=user))
        store.set_budget(CAPPED, Budget(period=Period.DAILY, amount=CAP))
    finally:
        store.close()


def recorded(url: str) -> tuple[Decimal, Decimal]:
    """What Redis holds: the cost recorded over every identity, and the capped identity's spend."""
    from identity_middleware.stores import RedisStore

    store = RedisStore.from_url(url, prefix=PREFIX)
    try:
        total = sum((Decimal(str(store.metrics(user).total_cost)) for user in (*IDS, CAPPED)), Decimal(0))
        return total, Decimal(str(store.budget_status(CAPPED)[0].spent))
    finally:
        store.close()


def report(name: str, policy: str, tally: Tally, affected: set[str] | None, cost: Decimal, capped_spent: Decimal,
           log: Path) -> Row:
    tracked = sum(1 for _, _, status, was in tally.answers if was)
    untracked = sum(1 for _, _, status, was in tally.answers if status == "200" and not was)
    others = Counter(status for _, _, status, was in tally.answers if status != "200")
    bad = [when for when, _, status, was in tally.answers if not was and status != "429"]
    recover = max(bad) - tally.fault_at if bad and tally.fault_at else 0.0
    beside = "-" if affected is None else str(sum(1 for when, user, status, was in tally.answers
                                                  if user not in affected and not was and status != "429"
                                                  and when >= tally.fault_at))
    counted = round(cost / COST)
    served = sum(1 for _, user, status, _ in tally.answers if user == CAPPED and status == "200")
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    said = Counter(re.sub(r"\d+", "N", line)[:160] for line in lines)
    for line, count in said.most_common(4):  # what the app said, for the reader of the table
        print(f"    {name} ({policy}) app log, {count} x: {line}", file=sys.stderr)
    errors = sum(1 for line in lines if "Traceback" in line or "ERROR" in line or "never retrieved" in line)
    return {"scenario": name, "policy": policy, "tracked 200": str(tracked), "untracked 200": str(untracked),
            "other answers": " ".join(f"{status}: {count}" for status, count in sorted(others.items())) or "-",
            "not tracked, other masters": beside, "recover s": f"{recover:.1f}",
            "recorded / tracked": f"{counted} / {tracked}", "lost": str(max(tracked - counted, 0)),
            "double": str(max(counted - tracked, 0)),
            "capped: spent, served": f"${capped_spent}, {served} x ${COST}",
            "app log lines (errors)": f"{len(lines)} ({errors})"}


def run(name: str, policy: str, seconds: float, fault_at: float, heal_after: float, wait: str) -> Row:
    scenario = SCENARIOS[name]
    root = Path(tempfile.mkdtemp(prefix="idm-failover-"))
    topology: Topology | None = None
    app: subprocess.Popen[bytes] | None = None
    try:
        topology = Sentinels(root) if scenario.kind == "sentinel" else Cluster(root)
        prepare_identities(topology.url)
        if scenario.prepare is not None:
            scenario.prepare(topology)
        affected = topology.affected()
        port = free_port()
        log = root / "app.log"
        with log.open("wb") as out:
            app = subprocess.Popen([sys.executable, "-m", "bench.failover", "--serve", str(port), topology.url,
                                    policy, wait], stdout=out, stderr=subprocess.STDOUT)
        until("the app", lambda: socket.create_connection(("127.0.0.1", port), timeout=0.2).close() is None, 30)
        tally = Tally()
        asyncio.run(under_load(port, topology, scenario, seconds, fault_at, heal_after, tally))
        app.send_signal(signal.SIGTERM)
        app.wait(timeout=60)
        cost, capped_spent = recorded(topology.url)
        return report(name, policy, tally, affected, cost, capped_spent, log)
    finally:
        if app is not None and app.poll() is None:
            app.kill()
            app.wait()
        if topology is not None:
            for node in topology.nodes:
                node.kill()
        if os.environ.get("IDM_FAILOVER_KEEP"):
            print(f"    kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", nargs=4, metavar=("PORT", "URL", "POLICY", "WAIT"), help=argparse.SUPPRESS)
    parser.add_argument("scenarios", nargs="*", help=f"which of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--policy", choices=("open", "closed", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="12 s per run, the fault at 4 s, healed 3 s later")
    parser.add_argument("--wait", default="", metavar="REPLICAS:SECONDS",
                        help="RedisOptions(wait=Wait(replicas, timeout)) in the app, e.g. 1:0.1")
    args = parser.parse_args(argv)
    if args.serve:
        serve(int(args.serve[0]), args.serve[1], args.serve[2], args.serve[3])
        return
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    seconds, fault_at, heal_after = (12.0, 4.0, 3.0) if args.quick else (20.0, 8.0, 4.0)
    policies = ("open", "closed") if args.policy == "both" else (args.policy,)
    started = time.monotonic()
    rows = []
    for name in args.scenarios or list(SCENARIOS):
        for policy in policies:
            rows.append(run(name, policy, seconds, fault_at, heal_after, args.wait))
            print(f"  {name} ({policy}): done at {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    print(table(rows))
    print(f"\n{time.monotonic() - started:.0f} s; {WORKERS} keep-alive clients, {len(IDS)} identities at ${COST} per "
          f"request and {CAPPED} on ${CAP} behind @budgeted; {seconds:.0f} s per run, the fault at {fault_at:.0f} s; "
          f"store socket_timeout 1 s{f', wait {args.wait}' if args.wait else ''}")


if __name__ == "__main__":
    main()
