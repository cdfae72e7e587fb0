"""The runtime on a real SQLite store, with the broker and the services stubbed and a clock the tests move.

The services answer from plain functions of their inputs, by service name (``Runtime.answers``); the
workflows and services are built with the engine tests' builders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from machinery.engine.model import Service, Workflow
from machinery.engine.ports import Telemetry
from machinery.engine.state import Event
from machinery.registry import Registry
from machinery.runtime import Events, Plans, Runner, ServiceCache
from machinery.store.sqlite import SqliteStore
from machinery.stubs import StubCaller, StubDispatcher
from tests.engine.builders import EXPRESSIONS, SETTINGS

Answer = Callable[[dict[str, Any]], Any]
"""A service's behaviour: its outputs for its inputs, or a CallFailure."""

TEXT: dict[str, Answer] = {
    "upper": lambda inputs: {"message": inputs["message"].upper()},
    "reverse": lambda inputs: {"message": inputs["message"][::-1]},
    "space-counter": lambda inputs: {"space_count": inputs["message"].count(" ")},
    "join": lambda inputs: {"summary": f"{inputs['reversed']}: {inputs['space_count']} spaces"},
}
"""The text services of the builders' seed and diamond workflows, answering as the examples do."""


class Runtime:
    """``Events`` and a ``Runner`` sharing a SQLite store, a :class:`StubDispatcher` and a :class:`StubCaller`."""

    def __init__(self, store: SqliteStore, telemetry: Telemetry | None = None) -> None:
        self.now = 1000.0
        self.store = store
        self.answers: dict[str, Answer] = dict(TEXT)
        self.registry = Registry(store, EXPRESSIONS)
        plans = Plans(store, EXPRESSIONS)
        self.dispatcher = StubDispatcher(self.clock)
        self.caller = StubCaller(lambda call: self.answers[call.service.name](call.inputs))
        self.events = Events(store, store, self.dispatcher, SETTINGS, plans, self.clock, telemetry)
        self.runner = Runner(
            store,
            self.dispatcher,
            {"http": self.caller},
            SETTINGS,
            plans,
            ServiceCache(store, clock=self.clock),
            self.clock,
            telemetry=telemetry,
        )

    def clock(self) -> float:
        return self.now

    def register(self, services: Iterable[Service], workflow: Workflow) -> None:
        for service in services:
            self.registry.add_service(service)
        self.registry.add_workflow(workflow)

    def send(self, workflow: str, data: Mapping[str, Any]) -> str:
        """Submit an event, and run nothing yet; its id."""
        return self.events.submit(workflow, data)[0].id

    def run(self, event_id: str) -> Event:
        """Run every message that is due, those it sends included; then the event ``event_id`` as it is."""
        self.dispatcher.drain(self.runner)
        return self.event(event_id)

    def event(self, event_id: str) -> Event:
        return self.events.get(event_id)

    def called(self) -> list[tuple[str, dict[str, Any]]]:
        """The unit and the inputs of each call the services received, in order."""
        return [(call.unit, call.inputs) for call in self.caller.calls]
