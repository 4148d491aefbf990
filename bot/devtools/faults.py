"""The simulator's faults: their kinds, where each applies, and the book that serves them.

Scripted faults (``Simulator.fail_next``) wait in one queue per endpoint and come
first; otherwise an API call draws a random transient fault at ``fault_rate``.
Webhook events are only ever broken on purpose: random faults never reach them.
"""

from __future__ import annotations

import collections
import logging
import random
from dataclasses import dataclass, replace

log = logging.getLogger(__name__)

API_ENDPOINTS = ("submit", "result", "upload", "output", "history", "models", "price", "balance")
ENDPOINTS = (*API_ENDPOINTS, "webhook")  # everything a fault can target
# fault kind -> the endpoints it can be scripted on
FAULT_KINDS: dict[str, tuple[str, ...]] = {
    "status": API_ENDPOINTS,  # an error envelope with that HTTP status (0: just answer late)
    "reset": API_ENDPOINTS,  # close the connection without answering (submit: no task)
    "malformed": API_ENDPOINTS,  # HTTP 200 with a truncated, non-JSON body (submit: task created)
    "accept_drop": ("submit",),  # create the task, then close without answering
    "accept_hang": ("submit",),  # create the task, then answer only after ``delay``
    "no_outputs": ("result",),  # a completed task answers with ``outputs: []`` once
    "stall": ("output",),  # headers and part of the MP4, then hang for ``delay``
    "drop": ("webhook",),  # the event is never sent: a lost webhook
    "duplicate": ("webhook",),  # the event is delivered twice, with the same webhook-id
    "bad_signature": ("webhook",),  # the webhook-signature hex is wrong
    "stale": ("webhook",),  # webhook-timestamp 10 minutes old, signed for that time
}
HANGING_KINDS = ("accept_hang", "stall")  # ``delay`` is how long they hang (0: slow_seconds)


@dataclass
class Fault:
    status: int  # 0: no error, just answer late (after ``delay``)
    code: int | None = None
    message: str = "simulated fault"
    retry_after: float | None = None
    delay: float = 0.0
    kind: str = "status"  # one of FAULT_KINDS

    @property
    def label(self) -> str:
        """How ``faults_served`` names it: the kind, or the status for "status" (0: "slow")."""
        if self.kind != "status":
            return self.kind
        return str(self.status) if self.status else "slow"


class FaultBook:
    """Queues scripted faults per endpoint, draws random ones, and logs every fault served."""

    def __init__(self, seed: int | None = None) -> None:
        self.queues: dict[str, collections.deque[Fault]] = {e: collections.deque() for e in ENDPOINTS}
        self.served: list[tuple[str, str]] = []  # (endpoint, Fault.label) per fault
        self._rng = random.Random(seed)

    def reseed(self, seed: int | float | str | None) -> None:
        self._rng.seed(seed)

    def script(self, endpoint: str, fault: Fault, times: int = 1) -> None:
        """Queue ``fault`` for the next ``times`` calls (or events) of ``endpoint``."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {ENDPOINTS}")
        if endpoint not in FAULT_KINDS.get(fault.kind, ()):
            raise ValueError(f"kind {fault.kind!r} is not one of {list(FAULT_KINDS)} or does not apply to {endpoint}")
        self.queues[endpoint].extend(replace(fault) for _ in range(times))

    def take(self, endpoint: str, *, rate: float = 0.0, slow: float = 3.0, completed: bool = False) -> Fault | None:
        """The scripted fault for this call, else (API calls only, at ``rate``) a random one; logged."""
        queue = self.queues[endpoint]
        if queue:
            if queue[0].kind == "no_outputs" and not completed:
                return None  # it waits for a result call that finds the task completed
            fault = queue.popleft()
        elif endpoint in API_ENDPOINTS and rate > 0 and self._rng.random() < rate:
            fault = self._random(endpoint, completed, slow)
        else:
            return None
        self.served.append((endpoint, fault.label))
        log.debug("simulated fault on %s: %s", endpoint, fault.label)
        return fault

    def _random(self, endpoint: str, completed: bool, slow: float) -> Fault:
        """One transient fault a flaky WaveSpeed shows on this endpoint."""
        e500, e502 = Fault(500, 5000, "internal server error"), Fault(502, 502, "bad gateway")
        e503 = Fault(503, 5003, "service unavailable")
        e429, e429_wait = Fault(429, 429, "too many requests"), Fault(429, 429, "too many requests", 1)
        reset, malformed = Fault(0, kind="reset"), Fault(0, kind="malformed")
        choices = {
            "submit": [e500, e502, e503, e429_wait, e429, reset, malformed,
                       Fault(0, kind="accept_drop"), Fault(0, delay=slow, kind="accept_hang")],
            "result": [e500, e502, e503, e429_wait, e429, reset, malformed, Fault(0, delay=slow)]
                      + ([Fault(0, kind="no_outputs")] if completed else []),
            "upload": [e500, e503, e429, reset],
            "output": [Fault(404, 404, "not found"), e500, reset, Fault(0, delay=slow, kind="stall")],
            "history": [e500, e503, e429, reset],
            "models": [e500, e503, e429, reset, malformed],
            "price": [e500, e503, e429, reset],
            "balance": [e500, e503, e429, reset],
        }[endpoint]
        return self._rng.choice(choices)
