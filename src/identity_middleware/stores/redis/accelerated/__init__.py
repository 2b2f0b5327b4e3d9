"""The accelerated transports: the Redis protocol spoken here, for a plain standalone server.

:mod:`.mux` carries every command of an event loop over one multiplexed connection; :mod:`.wire`
gives each thread a plain socket; :mod:`.resp` packs commands and reads the server's errors as
redis-py raises them. Each is a transport of :mod:`..transport` (the seam) that falls back to
redis-py's for what it does not speak. The store imports this package only with
``RedisOptions(multiplex=True)`` (the default where the URL allows it: ``redis://`` or
``unix://`` with nothing but a db and password, no client options, hiredis installed).
"""

from __future__ import annotations
