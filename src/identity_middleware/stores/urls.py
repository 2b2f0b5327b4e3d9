"""Store URLs checked before any connection is made, and shown with their password masked.

``http://redis:6379`` or ``localhost:6379`` used to become a Redis client that failed on every
request; here such a URL is refused where the store is built, in words that name the URL (its
password masked) and what is wrong with it.
"""

from __future__ import annotations

from urllib.parse import SplitResult, parse_qs, urlsplit

from ..core.errors import StoreMisconfigured

__all__ = ["REDIS_SCHEMES", "SCHEMES", "check_url", "masked"]

REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster")
SCHEMES = ("memory", *REDIS_SCHEMES)
_EXAMPLE = "redis://[:password@]host[:port][/db]"


def masked(url: str) -> str:
    """``url`` with its password (in the userinfo or a ``password=`` query option) as ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    shown = url
    if password:
        user, _, host = parts.netloc.rpartition("@")
        shown = shown.replace(f"//{parts.netloc}", f"//{user.partition(':')[0]}:***@{host}", 1)
    if "password=" in parts.query:
        options = "&".join("password=***" if each.startswith("password=") else each for each in parts.query.split("&"))
        shown = shown.replace(f"?{parts.query}", f"?{options}", 1)
    return shown


def check_url(url: object) -> str:
    """``url`` if it can name a store; else :class:`StoreMisconfigured` saying why."""
    if not isinstance(url, str) or not url.strip():
        raise StoreMisconfigured(f"a store URL is a string like memory:// or {_EXAMPLE}, not {url!r}")
    shown = masked(url)
    if "://" not in url:
        raise StoreMisconfigured(f"store URL {shown!r} has no scheme: write it as {_EXAMPLE} (or memory://)")
    try:
        parts = urlsplit(url)
        hosts = _hosts(parts)
        ports = [each.port for each in hosts]
    except ValueError as error:
        raise StoreMisconfigured(f"store URL {shown!r} cannot be read: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise StoreMisconfigured(f"store URL {shown!r}: {scheme}:// is not a store; use one of "
                                 f"{', '.join(s + '://' for s in SCHEMES)}")
    if scheme in ("memory", "unix"):
        if scheme == "unix" and not parts.path:
            raise StoreMisconfigured(f"store URL {shown!r} names no socket: unix:///path/to/redis.sock")
        return url
    if not all(each.hostname for each in hosts):
        raise StoreMisconfigured(f"store URL {shown!r} names no host: {_EXAMPLE}")
    for port in ports:
        if port is not None and not 0 < port < 65536:
            raise StoreMisconfigured(f"store URL {shown!r}: port {port} is out of range")
    _check_db(shown, scheme, parts)
    return url


def _hosts(parts: SplitResult) -> list[SplitResult]:
    """Each host the URL names, as a URL of its own: a Sentinel URL lists every Sentinel
    (``redis+sentinel://s1:26379,s2:26379,s3:26379/mymaster``), any other names one host."""
    if not parts.scheme.lower().endswith("+sentinel"):
        return [parts]
    user, at, hosts = parts.netloc.rpartition("@")
    return [parts._replace(netloc=f"{user}{at}{host}") for host in hosts.split(",")]


def _check_db(shown: str, scheme: str, parts: SplitResult) -> None:
    path = [part for part in parts.path.split("/") if part]
    if scheme.endswith("+sentinel"):
        if not path:
            raise StoreMisconfigured(f"store URL {shown!r} names no service: redis+sentinel://host:26379/mymaster")
        path = path[1:]
    dbs = path[:1] + parse_qs(parts.query).get("db", [])
    if len(path) > 1 or any(not db.isdigit() for db in dbs):
        raise StoreMisconfigured(f"store URL {shown!r}: the database is a number after the host "
                                 f"(redis://host:6379/0), not {'/'.join(path) or dbs[0]!r}")
    if scheme.endswith("+cluster") and any(int(db) for db in dbs):
        raise StoreMisconfigured(f"store URL {shown!r}: a Redis Cluster has only database 0")
