"""machinery.client against a real ``machinery serve`` on loopback, with tokens: one server for the module."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from examples.services import DEFINITIONS
from machinery.api.errors import HTTP_STATUS
from machinery.client import DEFINITION_ERRORS, ERRORS, EVENT_ERRORS, Client
from machinery.engine.errors import (
    Conflict,
    Forbidden,
    InvalidData,
    InvalidDefinition,
    InvalidExpression,
    InvalidState,
    MachineryError,
    NotFound,
    Unauthorized,
    Unreachable,
)
from machinery.engine.fleets import Fleet, FleetSettings, FleetTask, Workload
from machinery.engine.model import Field, Service, Workflow
from machinery.engine.ports import every
from machinery.engine.state import EventStatus, StepStatus
from machinery.engine.types import FieldType
from machinery.validation import ExecutableSchema, ServiceSchema, WorkflowSchema
from tests.served import ADMIN, READER, TOKENS, example_services, machinery_serve
from tests.support import free_port

SEED = Path(__file__).parent / "fixtures" / "seed"

EACH = {
    "name": "each",
    "inputs": [{"name": "words", "type": "array", "items": "string"}],
    "outputs": [{"name": "results", "type": "array", "items": "object"}],
    "steps": [{"id": "each", "kind": "map", "service": "upper", "items": "$.input.words", "item": "message"}],
}


def service(doc: dict[str, Any]) -> Service:
    return ServiceSchema().load(doc)  # type: ignore[no-any-return]


def workflow(doc: dict[str, Any]) -> Workflow:
    return WorkflowSchema().load(doc)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The server's URL, and the example definitions, registered, their services running."""
    tmp = tmp_path_factory.mktemp("client")
    settings = {"MACHINERY_COMMANDS_ALLOWED": "/usr/bin"}
    with (
        machinery_serve(tmp / "data", TOKENS, settings) as url,
        example_services(tmp / "definitions") as definitions,
    ):
        with Client(url, ADMIN) as admin:
            for file in sorted(definitions.glob("service-*.json")):
                admin.add_service(service(json.loads(file.read_text())))
            for file in sorted(definitions.glob("workflow-*.json")):
                admin.add_workflow(workflow(json.loads(file.read_text())))
            admin.add_workflow(workflow(EACH))
        yield url, definitions


@pytest.fixture
def admin(served: tuple[str, Path]) -> Iterator[Client]:
    with Client(served[0], ADMIN, timeout=5) as client:
        yield client


def test_definitions_come_back_as_the_engines_objects_a_page_at_a_time(admin: Client, served: tuple[str, Path]) -> None:
    upper = admin.get_service("upper")
    written = service(json.loads((served[1] / "service-upper.json").read_text()))

    assert replace(upper, id=None, revision=0) == written and upper.revision == 1
    assert admin.get_workflow("process-text").service_names == ("upper", "reverse", "space-counter")
    page = admin.list_services(offset=1, limit=1)
    assert [s.name for s in page.items] == ["space-counter"] and page.total == 3
    assert [w.name for w in every(admin.list_workflows, page_size=2)] == [
        "approval",
        "each",
        "process-text",
        "review-text",
        "shout-summary",
    ]


def test_an_event_sent_is_waited_for_until_it_completes(admin: Client) -> None:
    ack = admin.send("process-text", {"message": "the sun will rise"}, idempotency_key="client-1")
    again = admin.send("process-text", {"message": "the sun will rise"}, idempotency_key="client-1")
    seen: list[EventStatus] = []

    event = admin.wait(ack.event_id, timeout=30, on_change=lambda e: seen.append(e.status))

    assert (ack.status, ack.replayed, again.event_id, again.replayed) == (
        EventStatus.ACCEPTED,
        False,
        ack.event_id,
        True,
    )
    assert event.status is EventStatus.COMPLETED and seen[-1] is EventStatus.COMPLETED
    assert event.outputs == {"message": "ESIR LLIW NUS EHT", "space_count": 3}
    assert [(s.id, s.status, s.attempts) for s in event.steps] == [
        ("upper", StepStatus.COMPLETED, 1),
        ("reverse", StepStatus.COMPLETED, 1),
        ("space-counter", StepStatus.COMPLETED, 1),
    ]
    assert event.workflow == "process-text" and event.version == 1 and event.created_at.tzinfo is not None
    listed = admin.list_events(workflow="process-text", data={"message": "the sun will rise"})
    assert [e.id for e in listed.items] == [ack.event_id] and listed.total == 1


def test_a_waiting_event_is_paused_resumed_signalled_and_rerun(admin: Client) -> None:
    ack = admin.send("review-text", {"message": "a text long enough to wait for its reviewer's approval"})
    with pytest.raises(TimeoutError, match="still"):
        admin.wait(ack.event_id, timeout=0.5)

    assert admin.pause(ack.event_id).status is EventStatus.PAUSED
    assert admin.resume(ack.event_id).status is not EventStatus.PAUSED
    signalled = admin.signal(ack.event_id, "approval", {"reviewed_by": "ada"})
    done = admin.wait(ack.event_id, timeout=30)
    rerun = admin.rerun(ack.event_id)

    assert next(s for s in signalled.steps if s.id == "review").outputs == {"reviewed_by": "ada"}
    assert done.status is EventStatus.COMPLETED and done.outputs == {
        "message": "A TEXT LONG ENOUGH TO WAIT FOR ITS REVIEWER'S APPROVAL",
        "reviewed_by": "ada",
    }
    assert rerun.id != ack.event_id and rerun.data == done.data
    assert admin.cancel(rerun.id).status is EventStatus.CANCELLED
    with pytest.raises(InvalidState, match="cancel"):
        admin.cancel(rerun.id)
    with pytest.raises(InvalidState):
        admin.retry(ack.event_id)


def test_the_items_of_a_map_step_are_counted_and_listed(admin: Client) -> None:
    words = [f"w{i}" for i in range(7)]
    event = admin.wait(admin.send("each", {"words": words}).event_id, timeout=30)

    (step,) = event.steps
    items = admin.items(event.id, "each", after=1, limit=3)
    completed = admin.items(event.id, "each", statuses=[StepStatus.COMPLETED], limit=100)

    assert event.outputs == {"results": [{"message": w.upper()} for w in words]}
    assert step.items is not None and (step.items.total, step.items.finished) == (7, 7)
    assert step.items.counts == {"completed": 7}
    assert [(i.index, i.status, i.outputs) for i in items] == [
        (2, StepStatus.COMPLETED, {"message": "W2"}),
        (3, StepStatus.COMPLETED, {"message": "W3"}),
        (4, StepStatus.COMPLETED, {"message": "W4"}),
    ]
    assert len(completed) == 7
    with pytest.raises(NotFound):
        admin.items(event.id, "nope")


def test_the_servers_errors_are_raised_as_its_own_with_their_problems(admin: Client) -> None:
    for file in ("service-space-counter.json", "service-upper.json", "service-reverse.json"):
        doc = json.loads((SEED / file).read_text())
        with pytest.raises(Conflict, match="already"):
            admin.add_service(service(doc))
    # The seed's own mistake: its space-counter's answer is an int, where the workflow promises a string.
    doc = json.loads((SEED / "workflow-process-text.json").read_text())
    outputs = [{"name": "message", "type": "string"}, {"name": "space_count", "type": "string"}]

    with pytest.raises(InvalidDefinition, match="does not type-check") as refused:
        admin.add_workflow(workflow(doc | {"name": "seed-process-text", "outputs": outputs}))
    with pytest.raises(InvalidData, match="inputs") as bad_data:
        admin.send("process-text", {"message": 7})
    with pytest.raises(NotFound, match="nope"):
        admin.get_workflow("nope")

    assert [(p.field, p.expected, p.found) for p in refused.value.problems] == [("space_count", "string", "int")]
    assert {(p.field, p.expected, p.found) for p in bad_data.value.problems} == {("message", "string", "int")}
    with pytest.raises(NotFound):
        admin.get_workflow("seed-process-text")


def test_a_readers_token_reads_and_is_forbidden_to_write_and_none_is_unauthorized(served: tuple[str, Path]) -> None:
    url = served[0]
    with Client(url, READER) as reader, Client(url) as anonymous, Client(url, "forged") as forged:
        assert reader.whoami().role == "reader" and reader.list_services().total == 3
        with pytest.raises(Forbidden, match="reader"):
            reader.add_workflow(workflow(EACH | {"name": "other"}))
        with pytest.raises(Forbidden):
            reader.send("process-text", {"message": "m"})
        with pytest.raises(Unauthorized, match="no bearer token"):
            anonymous.list_events()
        with pytest.raises(Unauthorized, match="not valid"):
            forged.get_service("upper")
        assert anonymous.health()
    with Client(url, ADMIN) as admin:
        assert admin.whoami().roles == ("reader", "producer", "admin")
        assert "other" not in [w.name for w in every(admin.list_workflows)]


def test_graphs_are_drawn_by_the_server(admin: Client) -> None:
    event = admin.wait(admin.send("process-text", {"message": "m"}).event_id, timeout=30)

    assert admin.workflow_graph("process-text", "dot").startswith(b'digraph "process-text"')
    assert admin.event_graph(event.id, "dot").startswith(b'digraph "process-text"')
    with pytest.raises(NotFound):
        admin.event_graph("nope", "dot")


def test_a_server_that_does_not_answer_is_unreachable() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", timeout=2) as nobody:
        assert not nobody.health()
        with pytest.raises(Unreachable, match="cannot reach"):
            nobody.get_event("e")


def test_every_status_the_server_gives_an_error_is_read_back_as_that_error() -> None:
    for error, status in HTTP_STATUS.items():
        readings = {ERRORS.get(status, MachineryError), DEFINITION_ERRORS.get(status), EVENT_ERRORS.get(status)}
        # An expression is written in a workflow: a write refused for one is an InvalidDefinition.
        assert error in readings or (error is InvalidExpression and InvalidDefinition in readings), error


def test_executables_are_registered_checked_and_read_back_through_the_client(admin: Client) -> None:
    sort = ExecutableSchema().load(json.loads((DEFINITIONS / "commands" / "executable-sort.json").read_text()))

    added = admin.add_executable(sort)

    assert (added.name, added.version, added.revision) == (sort.name, sort.version, 1)
    assert admin.get_executable("sort").parameters == sort.parameters
    assert [e.name for e in every(admin.list_executables)] == ["sort"]
    assert admin.check_flags("sort", ["--stable", "--key", "--field-separator"]) == (
        "--field-separator",
        "--key",
        "--stable",
    )
    with pytest.raises(InvalidDefinition) as refused:
        admin.check_flags("sort", ["--stable"])
    assert refused.value.problems
    admin.delete_executable("sort")
    with pytest.raises(NotFound):
        admin.get_executable("sort")


def test_fleets_and_their_workloads_are_managed_through_the_client(admin: Client) -> None:
    fleet = admin.add_fleet(Fleet("lab", "simulated", FleetSettings(ping_interval=5)))

    assert (fleet.name, fleet.driver, fleet.settings.ping_interval) == ("lab", "simulated", 5)
    assert [f.name for f in admin.list_fleets()] == ["lab"]
    added = admin.add_workloads("lab", [Workload("lab", f"w{i}", labels={"rack": str(i % 2)}) for i in range(3)])
    assert added == ["w0", "w1", "w2"]
    assert [w.name for w in admin.list_workloads("lab", labels={"rack": "0"})] == ["w0", "w2"]
    assert [w.name for w in admin.list_workloads("lab", after="w0", limit=1)] == ["w1"]
    with pytest.raises(Conflict):
        admin.delete_fleet("lab")
    assert admin.remove_workloads("lab", ["w0", "w1", "w2"]) == ["w0", "w1", "w2"]
    kinds = {(e.workload, e.kind.value) for e in admin.fleet_events("lab")}
    assert {("w1", "added"), ("w1", "removed")} <= kinds
    assert {e.kind.value for e in admin.fleet_events("lab", "w2")} == {"added", "removed"}
    admin.delete_fleet("lab")
    with pytest.raises(NotFound):
        admin.get_fleet("lab")


def test_a_fleets_task_is_run_ad_hoc_through_the_client_as_an_event(admin: Client) -> None:
    echo = FleetTask("echo", (Field("n", FieldType("int")),), (Field("n", FieldType("int")),))
    admin.add_fleet(Fleet("lab", "simulated", FleetSettings(ping_interval=5), (echo,)))

    ack = admin.run_task("lab", "echo", {"n": 3}, {"rack": "0"}, idempotency_key="echo-1")
    again = admin.run_task("lab", "echo", {"n": 3}, {"rack": "0"}, idempotency_key="echo-1")

    assert (again.event_id, again.replayed) == (ack.event_id, True)
    event = admin.get_event(ack.event_id)
    assert (event.workflow, event.data) == ("lab:echo", {"n": 3, "selector": {"rack": "0"}})
    with pytest.raises(InvalidData) as refused:
        admin.run_task("lab", "echo", {"n": "three"})
    assert refused.value.problems[0].field == "n"
