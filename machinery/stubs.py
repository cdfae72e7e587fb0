"""Stand-ins for the broker and the services, to run events in one process with no network.

:class:`StubDispatcher` keeps the messages the runtime sends in memory and hands them to a
:class:`~machinery.runtime.Runner` when asked; :class:`StubCaller` answers service calls from a
plain function. Tests and the benchmarks run the real runtime and store on them::

    dispatcher = StubDispatcher(clock)
    caller = StubCaller(lambda call: {"message": call.inputs["message"].upper()})
    runner = Runner(store, dispatcher, {"http": caller}, settings, plans, ServiceCache(store, clock=clock), clock)
    events = Events(store, store, dispatcher, settings, plans, clock)
    event, _ = events.submit("shout", {"message": "hi"})
    dispatcher.drain(runner)
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from machinery.engine.calls import Call, CallFailure
from machinery.runtime import Clock, Runner


class Message(NamedTuple):
    """The nudge "look at ``unit`` of ``event_id``", to be run once ``due`` (a time of the dispatcher's clock)."""

    due: float
    event_id: str
    unit: str


class StubDispatcher:
    """A :class:`~machinery.engine.ports.Dispatcher` that queues its messages in memory.

    A message sent with a delay is due that many seconds after it was sent, on ``clock`` (give it the
    runtime's clock). :meth:`drain` runs only the messages that are due, so that a test moves its clock
    on to fire a retry or a timer; the others stay queued.
    """

    def __init__(self, clock: Clock = time.time) -> None:
        self.clock = clock
        # Ordered by due time, then by the order they were sent in.
        self._heap: list[tuple[float, int, Message]] = []
        self._order = itertools.count()

    def dispatch(self, event_id: str, step_id: str, delay: float = 0.0) -> None:
        message = Message(self.clock() + delay, event_id, step_id)
        heapq.heappush(self._heap, (message.due, next(self._order), message))

    @property
    def queued(self) -> list[Message]:
        """The messages not run yet, due ones and later ones, in the order they will run."""
        return [message for _, _, message in sorted(self._heap)]

    def drop(self) -> list[Message]:
        """Forget every queued message, as a broker that lost them; the messages forgotten."""
        dropped = self.queued
        self._heap.clear()
        return dropped

    def drain(self, runner: Runner, limit: int = 10_000) -> int:
        """Run every message that is due, earliest first, including those sent meanwhile; how many ran.

        More than ``limit`` messages in one drain raise RuntimeError: an event sending messages
        without end is a bug to see, not to wait for.
        """
        ran = 0
        while self._heap and self._heap[0][0] <= self.clock():
            if ran == limit:
                raise RuntimeError(f"still messages to run after {limit}: {self.queued[:5]}...")
            message = heapq.heappop(self._heap)[2]
            runner.run(message.event_id, message.unit)
            ran += 1
        return ran


Handler = Callable[[Call], Any]
"""Answers a call: its outputs as decoded JSON, or a :class:`CallFailure` for a call that failed."""


class StubCaller:
    """A :class:`~machinery.engine.ports.ServiceCaller` that answers from ``handler(call)``, as httpx's
    ``MockTransport`` does, and keeps every call it received in :attr:`calls`, in order.

    The handler returns the service's outputs, or a :class:`CallFailure` (transient or not) to fail the call.
    An exception it raises is not a failure of the service but a bug, and propagates out of the runner, which
    leaves the unit claimed until its lease lapses, as a crashed worker would.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.calls: list[Call] = []

    def call(self, call: Call, event_id: str) -> tuple[Any, CallFailure | None]:
        self.calls.append(call)
        answer = self.handler(call)
        if isinstance(answer, CallFailure):
            return None, answer
        return answer, None
