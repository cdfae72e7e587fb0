"""The stubs the tests and benchmarks run the runtime on: a dispatcher in memory and a caller from a function."""

from __future__ import annotations

import pytest

from machinery.engine.calls import Call
from machinery.stubs import Message, StubCaller, StubDispatcher
from tests.engine.builders import PERMANENT, service


class Recorder:
    """Stands for a Runner: notes each message it runs, and sends ``then`` once for each it runs first."""

    def __init__(self, dispatcher: StubDispatcher, then: dict[str, str] | None = None) -> None:
        self.dispatcher = dispatcher
        self.then = then or {}
        self.ran: list[str] = []

    def run(self, event_id: str, unit: str) -> None:
        self.ran.append(unit)
        if unit in self.then:
            self.dispatcher.dispatch(event_id, self.then[unit])


def test_drain_runs_the_due_messages_in_order_and_those_they_send_and_keeps_the_later_ones():
    now = [100.0]
    dispatcher = StubDispatcher(lambda: now[0])
    runner = Recorder(dispatcher, then={"a": "c"})
    dispatcher.dispatch("ev", "later", delay=5)
    dispatcher.dispatch("ev", "a")
    dispatcher.dispatch("ev", "b")

    assert dispatcher.drain(runner) == 3
    assert runner.ran == ["a", "b", "c"]
    assert dispatcher.queued == [Message(105.0, "ev", "later")]
    now[0] = 105.0
    assert dispatcher.drain(runner) == 1
    assert runner.ran[-1] == "later" and dispatcher.queued == []


def test_drain_raises_once_it_has_run_its_limit_of_messages_and_more_are_due():
    dispatcher = StubDispatcher()
    runner = Recorder(dispatcher, then={"a": "a"})
    dispatcher.dispatch("ev", "a")

    with pytest.raises(RuntimeError, match="after 10"):
        dispatcher.drain(runner, limit=10)
    assert len(runner.ran) == 10


def call(name: str) -> Call:
    return Call(name, service(name), {"n": 1}, attempt=1, token="t", idempotency_key=f"ev/{name}")


def test_the_caller_answers_with_the_handler_s_outputs_or_its_failure_and_keeps_every_call():
    caller = StubCaller(lambda c: PERMANENT if c.service.name == "broken" else {"n": c.inputs["n"] + 1})

    assert caller.call(call("inc"), "ev") == ({"n": 2}, None)
    assert caller.call(call("broken"), "ev") == (None, PERMANENT)
    assert [c.step_id for c in caller.calls] == ["inc", "broken"]
