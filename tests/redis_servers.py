"""Start private redis-server processes (standalone and a 3-master Cluster) for the test-suite."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from waiting import wait_until

REDIS_SERVER = os.environ.get("REDIS_SERVER", shutil.which("redis-server") or "/usr/bin/redis-server")
REDIS_CLI = os.environ.get("REDIS_CLI", shutil.which("redis-cli") or "/usr/bin/redis-cli")


def require_binaries() -> None:
    """Fail loudly: a skipped Redis test would hide that the store was never exercised."""
    for binary in (REDIS_SERVER, REDIS_CLI):
        if not Path(binary).exists():
            raise RuntimeError(
                f"{binary} not found: the Redis tests need a real redis-server and redis-cli "
                "(apt-get install redis-server, or set REDIS_URL / REDIS_CLUSTER_URL)"
            )


def free_port(*, bus: bool = False) -> int:
    """A free TCP port; with ``bus`` also port + 10000 (the Cluster bus) is free."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not bus:
            return port
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port found")


def _cli(port: int, *args: str) -> str:
    return subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), *args],
                          capture_output=True, text=True, timeout=30, check=False).stdout


def _wait_ping(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server on port {port} exited:\n{log.read_text(errors='replace')}")
        return _cli(port, "PING").strip() == "PONG"

    wait_until(answers, f"redis-server on port {port} answering PING", within=20, every=0.05)


def start_server(port: int, directory: Path, *extra: str) -> subprocess.Popen[bytes]:
    log = directory / "redis.log"
    process = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
         "--save", "", "--appendonly", "no", "--logfile", str(log), "--maxclients", "10000",
         "--enable-debug-command", "local", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    _wait_ping(port, process, log)
    return process


def _answers_within(port: int, seconds: float) -> bool:
    """Whether the server on ``port`` answers a PING on a new connection within ``seconds``."""
    with socket.create_connection(("127.0.0.1", port)) as probe:
        probe.settimeout(seconds)
        probe.sendall(b"PING\r\n")
        try:
            probe.recv(16)
        except TimeoutError:
            return False
        return True


@contextlib.contextmanager
def stalled(port: int, seconds: float) -> Iterator[None]:
    """The server on ``port`` stalled by ``DEBUG SLEEP seconds`` (its connections stay open, nothing is
    answered): enters once a probe goes unanswered, exits once the server answers again."""
    sleeper = socket.create_connection(("127.0.0.1", port))
    try:
        sleeper.sendall(b"DEBUG SLEEP %s\r\n" % str(seconds).encode())
        # Asleep once a PING sent after the DEBUG SLEEP goes unanswered for a while.
        wait_until(lambda: not _answers_within(port, 0.05),
                   "redis stalled (start the server with --enable-debug-command local)", within=10, every=0)
        yield
        sleeper.settimeout(seconds + 30)
        if not sleeper.recv(16).startswith(b"+OK"):
            raise RuntimeError("DEBUG SLEEP was refused: start the server with --enable-debug-command local")
    finally:
        sleeper.close()


@contextlib.contextmanager
def frozen(process: subprocess.Popen[bytes]) -> Iterator[None]:
    """The server ``process`` stopped (SIGSTOP) until the block ends: its sockets stay open and
    nothing is answered, however long a client waits (unlike :func:`stalled`, which ends by itself)."""
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


def stop_servers(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def own_server(directory: Path, *extra: str) -> Iterator[int]:
    """A private redis-server in ``directory`` (one a test may stall, stop or reconfigure); yields its port."""
    port = free_port()
    process = start_server(port, directory, *extra)
    try:
        yield port
    finally:
        stop_servers([process])


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A standalone server on a free port in a temp dir; yields ``redis://127.0.0.1:PORT/0``."""
    require_binaries()
    with tempfile.TemporaryDirectory(prefix="idm-redis-") as directory:
        port = free_port()
        process = start_server(port, Path(directory))
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop_servers([process])


@dataclass
class Cluster:
    """A private Redis Cluster: its URL, each node's port, and the processes (by port)."""

    url: str
    ports: list[int]
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` (a crash: nothing is flushed or handed over)."""
        process = self.processes[port]
        process.kill()
        process.wait()

    def master_of(self, slot: int) -> int:
        """The port of the master serving ``slot``, as a live node's ``CLUSTER SLOTS`` says."""
        import redis

        for port in self.ports:
            if self.processes[port].poll() is not None:
                continue
            with redis.Redis(port=port) as admin:
                for start, end, master, *_ in admin.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        return int(master[1])
        raise AssertionError(f"no master serves slot {slot}")

    def wait_state(self, state: str) -> None:
        """Until every live node reports ``cluster_state:<state>``."""
        wait_until(lambda: all(f"cluster_state:{state}" in _cli(port, "CLUSTER", "INFO") for port in self.ports
                               if self.processes[port].poll() is None),
                   f"every node of the Redis Cluster at cluster_state:{state}", within=60, every=0.1)


@contextlib.contextmanager
def cluster_nodes(masters: int = 3, replicas: int = 0, *extra: str) -> Iterator[Cluster]:
    """A real Redis Cluster of ``masters`` primaries with ``replicas`` replicas each, every node
    started with ``extra`` options (e.g. ``--cluster-require-full-coverage no``)."""
    require_binaries()
    with tempfile.TemporaryDirectory(prefix="idm-cluster-") as root:
        cluster = Cluster("", [])
        try:
            for index in range(masters * (1 + replicas)):
                directory = Path(root) / str(index)
                directory.mkdir()
                port = free_port(bus=True)
                cluster.ports.append(port)
                cluster.processes[port] = start_server(
                    port, directory, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    *(extra or ("--cluster-node-timeout", "5000")))
            result = subprocess.run(
                [REDIS_CLI, "--cluster", "create", *[f"127.0.0.1:{port}" for port in cluster.ports],
                 "--cluster-replicas", str(replicas), "--cluster-yes"],
                capture_output=True, text=True, timeout=60, check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{result.stdout}\n{result.stderr}")
            cluster.wait_state("ok")
            cluster.url = f"redis+cluster://127.0.0.1:{cluster.ports[0]}"
            yield cluster
        finally:
            stop_servers([process for process in cluster.processes.values() if process.poll() is None])


@contextlib.contextmanager
def redis_cluster(masters: int = 3) -> Iterator[str]:
    """A real Redis Cluster of ``masters`` primaries; yields ``redis+cluster://127.0.0.1:PORT``."""
    with cluster_nodes(masters) as cluster:
        yield cluster.url


def start_sentinel(port: int, directory: Path, master_port: int, service: str) -> subprocess.Popen[bytes]:
    """``redis-server --sentinel`` on ``port`` watching ``127.0.0.1:master_port`` as ``service`` (quorum 1)."""
    config = directory / "sentinel.conf"  # Sentinel rewrites its config file: it must be writable
    log = directory / "sentinel.log"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {directory}\nlogfile {log}\n"
        f"sentinel monitor {service} 127.0.0.1 {master_port} 1\n"
        f"sentinel down-after-milliseconds {service} 5000\n"
    )
    process = subprocess.Popen([REDIS_SERVER, str(config), "--sentinel"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_ping(port, process, log)
    return process


def _wait_sentinel_master(port: int, service: str, master_port: int, process: subprocess.Popen[bytes],
                          log: Path) -> None:
    """Until the sentinel names ``127.0.0.1:master_port`` as ``service``'s master and sees it up."""
    def reports() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server --sentinel on port {port} exited:\n{log.read_text(errors='replace')}")
        address = _cli(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", service).split()
        fields = _cli(port, "SENTINEL", "MASTER", service).split()
        flags = dict(zip(fields[::2], fields[1::2], strict=False)).get("flags", "")
        return address == ["127.0.0.1", str(master_port)] and flags == "master"

    wait_until(reports, f"the sentinel on port {port} reporting {service} at 127.0.0.1:{master_port}",
               every=0.05)


@contextlib.contextmanager
def redis_sentinel(service: str = "mymaster") -> Iterator[str]:
    """One master redis-server and one Sentinel monitoring it, on free ports in a temp dir.

    Yields ``redis+sentinel://127.0.0.1:SENTINEL_PORT/SERVICE``; both processes are stopped on exit.
    """
    require_binaries()
    with tempfile.TemporaryDirectory(prefix="idm-sentinel-") as root:
        processes: list[subprocess.Popen[bytes]] = []
        try:
            master_dir = Path(root) / "master"
            sentinel_dir = Path(root) / "sentinel"
            master_dir.mkdir()
            sentinel_dir.mkdir()
            master_port = free_port()
            processes.append(start_server(master_port, master_dir))
            sentinel_port = free_port()
            sentinel = start_sentinel(sentinel_port, sentinel_dir, master_port, service)
            processes.append(sentinel)
            _wait_sentinel_master(sentinel_port, service, master_port, sentinel, sentinel_dir / "sentinel.log")
            yield f"redis+sentinel://127.0.0.1:{sentinel_port}/{service}"
        finally:
            stop_servers(processes)


@contextlib.contextmanager
def redis_unix_server() -> Iterator[Path]:
    """A redis-server listening only on a unix socket (``--port 0``); yields the socket's path."""
    import redis

    require_binaries()
    # A short directory: a socket path is limited to about 100 bytes.
    with tempfile.TemporaryDirectory(prefix="idm-unix-", dir="/tmp") as directory:
        socket_path = Path(directory) / "r.sock"
        log = Path(directory) / "redis.log"
        process = subprocess.Popen(
            [REDIS_SERVER, "--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700",
             "--dir", directory, "--save", "", "--appendonly", "no", "--logfile", str(log),
             "--enable-debug-command", "local"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server on {socket_path} exited:\n{log.read_text(errors='replace')}")
            with contextlib.suppress(redis.exceptions.ConnectionError), \
                    redis.Redis(unix_socket_path=str(socket_path)) as client:
                return bool(client.ping())
            return False

        try:
            wait_until(answers, f"redis-server on {socket_path} answering PING", within=20, every=0.05)
            yield socket_path
        finally:
            stop_servers([process])


@contextlib.contextmanager
def redis_sentinel_with_replica(service: str = "mymaster") -> Iterator[tuple[str, int, int, int]]:
    """A master, its replica and one Sentinel (quorum 1) on free ports, for failovers.

    Yields ``(redis+sentinel://127.0.0.1:SENTINEL_PORT/SERVICE, sentinel_port, master_port,
    replica_port)``; every process is stopped on exit."""
    require_binaries()
    with tempfile.TemporaryDirectory(prefix="idm-failover-") as root:
        processes: list[subprocess.Popen[bytes]] = []
        try:
            directories = [Path(root) / name for name in ("master", "replica", "sentinel")]
            for directory in directories:
                directory.mkdir()
            master_port, replica_port = free_port(), free_port()
            processes.append(start_server(master_port, directories[0]))
            processes.append(start_server(replica_port, directories[1],
                                          "--replicaof", "127.0.0.1", str(master_port)))
            wait_until(lambda: "master_link_status:up" in _cli(replica_port, "INFO", "replication"),
                       "the replica in sync with its master", every=0.05)
            sentinel_port = free_port()
            sentinel = start_sentinel(sentinel_port, directories[2], master_port, service)
            processes.append(sentinel)
            _wait_sentinel_master(sentinel_port, service, master_port, sentinel, directories[2] / "sentinel.log")
            # To fail over, the sentinel must know the replica.
            wait_until(lambda: "slaves=1" in _cli(sentinel_port, "INFO", "sentinel"),
                       "the sentinel knowing the replica", every=0.05)
            yield f"redis+sentinel://127.0.0.1:{sentinel_port}/{service}", sentinel_port, master_port, replica_port
        finally:
            stop_servers(processes)


def _sentinel_master_port(sentinel_port: int, service: str) -> str:
    fields = _cli(sentinel_port, "SENTINEL", "MASTER", service).split()
    return dict(zip(fields[::2], fields[1::2], strict=False)).get("port", "")


def sentinel_failover(sentinel_port: int, service: str, to_port: int) -> None:
    """``SENTINEL FAILOVER service``; returns once the sentinel has switched ``service`` to
    ``127.0.0.1:to_port`` (``SENTINEL MASTER``, what clients read; ``GET-MASTER-ADDR-BY-NAME`` names the
    promoted replica earlier). The old master may still take writes until the sentinel reconfigures
    it as a replica, seconds later."""
    # Refused while the sentinel still learns the replica's state: asked again.
    wait_until(lambda: "OK" in _cli(sentinel_port, "SENTINEL", "FAILOVER", service),
               "the sentinel accepting SENTINEL FAILOVER", within=60, every=0.2)
    wait_until(lambda: _sentinel_master_port(sentinel_port, service) == str(to_port),
               f"the sentinel switching {service} to port {to_port}", within=60, every=0.05)


def wait_role(port: int, role: str) -> None:
    """Until the server on ``port`` reports ``role`` (``master`` / ``slave``) with its link up."""
    def in_role() -> bool:
        info = _cli(port, "INFO", "replication")
        return f"role:{role}" in info and (role == "master" or "master_link_status:up" in info)

    wait_until(in_role, f"the server on port {port} a {role} with its link up", within=60, every=0.05)
