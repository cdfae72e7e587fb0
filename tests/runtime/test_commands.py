"""A command step on workers that may not run commands: it is passed on to those that may, and waits saying so."""

from __future__ import annotations

from pathlib import Path

from machinery.engine.model import (
    Argument,
    CommandTarget,
    Executable,
    Field,
    Parameter,
    Service,
    Workflow,
    linear_steps,
)
from machinery.engine.state import StepStatus
from machinery.engine.types import FieldType
from machinery.registry import Registry
from machinery.runtime import Runner
from machinery.stubs import StubCaller, StubDispatcher
from tests.engine.builders import EXPRESSIONS, SETTINGS, service
from tests.runtime.harness import Runtime

MESSAGE = Field("message", FieldType("string"))


def register_sort(runtime: Runtime) -> None:
    registry = Registry(runtime.store, EXPRESSIONS, commands_allowed=[Path("/usr/bin")])
    registry.add_executable(Executable("sort", "/usr/bin/sort", parameters=(Parameter("--reverse"),)))
    target = CommandTarget("sort", (Argument("--reverse"),), stdin="message")
    sort = Service("sort-lines", target, inputs=(MESSAGE,), outputs=(Field("stdout", FieldType("string")),))
    registry.add_service(service("upper", [MESSAGE], [MESSAGE]))
    registry.add_service(sort)
    registry.add_workflow(Workflow("shout-and-sort", linear_steps(["upper", "sort-lines"]), inputs=(MESSAGE,)))


def test_a_command_step_waits_for_a_commands_worker_and_is_run_by_the_first_one(runtime: Runtime) -> None:
    register_sort(runtime)
    commands = StubDispatcher(runtime.clock)
    runtime.runner.elsewhere = {"command": commands}
    event_id = runtime.send("shout-and-sort", {"message": "b\na\n"})

    waiting = runtime.run(event_id).steps["sort-lines"]

    assert waiting.status is StepStatus.READY and waiting.attempts == 0
    assert waiting.error == {
        "kind": "worker",
        "message": "waiting for a worker that runs command services (machinery worker --commands)",
        "transient": True,
    }
    assert [m.unit for m in commands.queued] == ["sort-lines"]
    assert [unit for unit, _ in runtime.called()] == ["upper"]

    sorter = StubCaller(lambda call: {"stdout": "".join(sorted(call.inputs["message"].splitlines(True)))})
    callers = {"http": runtime.caller, "command": sorter}
    worker = Runner(
        runtime.store,
        runtime.dispatcher,
        callers,
        SETTINGS,
        runtime.runner.plans,
        runtime.runner.services,
        runtime.clock,
    )
    commands.drain(worker)

    done = runtime.event(event_id)
    assert done.status == "completed"
    assert done.steps["sort-lines"].outputs == {"stdout": "A\nB\n"}
    assert done.steps["sort-lines"].error is None
