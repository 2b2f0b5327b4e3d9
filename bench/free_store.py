"""The ``free`` app's store: what the middleware costs with a store that costs nothing.

Each identity's first admission is :class:`MemoryStore`'s; every later one is that same answer,
taken from a dict; settlements are dropped. So ``memory`` minus ``free`` is what MemoryStore's
admission and settlement cost a request, and ``free`` is the most any store could let the
middleware reach: the rest is the middleware's own path (the body, the identity, the flow, the
meter, ``record_usage``). It commits nothing, so its usage check says so instead of counting.
"""

from __future__ import annotations

from identity_middleware.core.admission import Admission, AdmissionRequest, Settlement
from identity_middleware.stores import MemoryStore


class FreeStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self._answers: dict[str, Admission] = {}

    def admit(self, request: AdmissionRequest) -> Admission:
        answer = self._answers.get(request.external_id)
        if answer is None:
            answer = self._answers[request.external_id] = super().admit(request)
        return answer

    def settle(self, settlement: Settlement) -> None:
        return None
