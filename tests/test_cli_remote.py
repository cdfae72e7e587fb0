"""The command line given --url (here MACHINERY_URL): a real ``machinery serve`` with tokens, one for the module."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from machinery.cli import EXIT_EVENT_FAILED, EXIT_INVALID, EXIT_REFUSED, EXIT_UNFINISHED, _bar, main
from machinery.client import Client, ItemCounts
from machinery.engine.errors import NotFound
from machinery.engine.fleets import Fleet, FleetSettings, FleetTask, Workload
from machinery.engine.model import Field
from machinery.engine.state import EventStatus
from machinery.engine.types import FieldType
from machinery.validation import WorkflowSchema
from tests.served import ADMIN, READER, TOKENS, example_services, machinery_serve
from tests.support import wait_for
from tests.test_client import EACH

Invoke = Callable[..., Result]

DOOMED = {"name": "doomed", "steps": [{"id": "no", "kind": "fail", "message": "refused on purpose"}]}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The server's URL, and the example definitions (not applied), their services running."""
    tmp = tmp_path_factory.mktemp("cli-remote")
    with machinery_serve(tmp / "data", TOKENS) as url, example_services(tmp / "definitions") as definitions:
        yield url, definitions


@pytest.fixture
def admin(served: tuple[str, Path]) -> Iterator[Client]:
    with Client(served[0], ADMIN) as client:
        yield client


@pytest.fixture
def run(served: tuple[str, Path]) -> Invoke:
    """Run the CLI against the server, by default with the admin's token."""

    def invoke(*args: str, token: str | None = ADMIN, stdin: str | None = None) -> Result:
        env = {"MACHINERY_URL": served[0], "MACHINERY_TOKEN": token}
        return CliRunner().invoke(main, list(args), env=env, input=stdin)

    return invoke


@pytest.fixture(scope="module")
def applied(served: tuple[str, Path]) -> None:
    result = CliRunner().invoke(main, ["apply", str(served[1]), "--url", served[0], "--token", ADMIN])
    assert result.exit_code == 0, result.output
    with Client(served[0], ADMIN) as admin:
        for doc in (EACH, DOOMED):
            admin.add_workflow(WorkflowSchema().load(doc))


def test_the_commands_that_only_talk_to_a_server_say_they_need_its_url(tmp_path: Path) -> None:
    for args in (
        ["send", "w", "{}"],
        ["events"],
        ["event", "e"],
        ["signal", "e", "s"],
        ["cancel", "e"],
        ["retry", "e"],
        ["run-task", "f", "t"],
    ):
        result = CliRunner().invoke(main, args, env={"MACHINERY_URL": None, "MACHINERY_DATA_DIR": str(tmp_path)})

        assert result.exit_code == 2, args
        assert f"`machinery {args[0]}` talks to a running server: give --url or set MACHINERY_URL" in result.output


def test_apply_dry_run_says_what_would_change_and_changes_nothing(
    run: Invoke, admin: Client, served: tuple[str, Path], tmp_path: Path
) -> None:
    upper = json.loads((served[1] / "service-upper.json").read_text()) | {"name": "dry-upper"}
    flow = {"name": "dry-flow", "services": ["dry-upper"], "inputs": upper["inputs"], "outputs": upper["outputs"]}
    (tmp_path / "service.json").write_text(json.dumps(upper))
    (tmp_path / "workflow.json").write_text(json.dumps(flow))

    first = run("apply", "--dry-run", str(tmp_path))
    with pytest.raises(NotFound):
        admin.get_service("dry-upper")
    with pytest.raises(NotFound):
        admin.get_workflow("dry-flow")
    applied = run("apply", str(tmp_path))
    (tmp_path / "service.json").write_text(json.dumps(upper | {"description": "changed"}))
    changed = run("apply", "--dry-run", str(tmp_path))

    assert first.exit_code == 0, first.output
    assert first.output == "service dry-upper would be created\nworkflow dry-flow would be created\n"
    assert applied.output == "service dry-upper created\nworkflow dry-flow created\n"
    assert changed.output == "service dry-upper would be updated\nworkflow dry-flow unchanged\n"
    assert admin.get_service("dry-upper").description == upper["description"]
    assert admin.get_service("dry-upper").revision == 1


@pytest.mark.usefixtures("applied")
def test_send_wait_runs_the_example_to_completed_and_prints_its_outputs(run: Invoke) -> None:
    result = run("send", "process-text", '{"message": "The Sun will rise in the morning !"}', "--wait")

    assert result.exit_code == 0, result.output
    assert "completed" in result.stdout.splitlines()[0]
    outputs = json.loads(result.stdout[result.stdout.index("{") :])
    assert outputs == {"message": "! GNINROM EHT NI ESIR LLIW NUS EHT", "space_count": 7}


@pytest.mark.usefixtures("applied")
def test_send_takes_its_data_from_a_file_or_standard_input_and_prints_the_id(
    run: Invoke, admin: Client, tmp_path: Path
) -> None:
    (tmp_path / "data.json").write_text('{"message": "from a file"}')

    from_file = run("send", "process-text", f"@{tmp_path / 'data.json'}")
    from_stdin = run("send", "process-text", "-", stdin='{"message": "from stdin"}')
    not_an_object = run("send", "process-text", "[1]")

    assert admin.get_event(from_file.stdout.strip()).data == {"message": "from a file"}
    assert admin.get_event(from_stdin.stdout.strip()).data == {"message": "from stdin"}
    assert not_an_object.exit_code == EXIT_INVALID and "a JSON object" in not_an_object.output


@pytest.mark.usefixtures("applied")
def test_send_wait_says_why_an_event_failed_and_exits_with_its_own_code(run: Invoke) -> None:
    result = run("send", "doomed", "--wait")
    refused = run("send", "process-text", '{"message": 7}')

    assert result.exit_code == EXIT_EVENT_FAILED
    assert "failed: refused on purpose" in result.stderr
    assert refused.exit_code == EXIT_REFUSED
    assert "does not match the inputs" in refused.stderr and "'message' should be string" in refused.stderr


@pytest.mark.usefixtures("applied")
def test_send_wait_gives_up_after_its_timeout_with_its_own_code(run: Invoke) -> None:
    long = '{"message": "a text long enough to wait for its reviewer and so for longer than the timeout"}'

    result = run("send", "review-text", long, "--wait", "--timeout", "0.3")

    assert result.exit_code == EXIT_UNFINISHED
    assert "after 0.3 s" in result.stderr


@pytest.mark.usefixtures("applied")
def test_events_are_listed_as_a_table_filtered(run: Invoke, admin: Client) -> None:
    ack = admin.send("process-text", {"message": "listed"})
    admin.wait(ack.event_id, timeout=30)

    result = run("events", "--workflow", "process-text", "--data", '{"message": "listed"}', "--status", "completed")
    none = run("events", "--workflow", "process-text", "--status", "cancelled")

    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split() == ["EVENT", "WORKFLOW", "STATUS", "CREATED", "UPDATED"]
    assert row.split()[:4] == [ack.event_id, "process-text", "v1", "completed"]
    assert none.stdout.splitlines() == ["EVENT  WORKFLOW  STATUS  CREATED  UPDATED"]


@pytest.mark.usefixtures("applied")
def test_event_watch_follows_the_steps_with_a_bar_for_a_map(run: Invoke, admin: Client) -> None:
    ack = admin.send("each", {"words": [f"w{i}" for i in range(5)]})

    watched = run("event", ack.event_id, "--watch")
    shown = run("event", ack.event_id)

    assert watched.exit_code == 0, watched.output
    assert f"event {ack.event_id} completed" in watched.stdout
    assert "[####################] 5/5 (5 completed)" in watched.stdout
    assert shown.stdout.splitlines()[0] == f"event {ack.event_id} of each v1: completed"
    assert shown.stdout.splitlines()[2].split() == ["STEP", "KIND", "STATUS", "ATTEMPTS"]


def test_a_maps_bar_counts_its_finished_items() -> None:
    counts = ItemCounts(10, {"completed": 3, "failed": 1, "running": 2, "ready": 0})

    assert _bar(counts) == "[########............] 4/10 (3 completed, 1 failed, 2 running)"
    assert _bar(ItemCounts(0, {})) == "[####################] 0/0"


@pytest.mark.usefixtures("applied")
def test_signal_cancel_and_retry_act_on_events_and_say_what_they_refuse(run: Invoke, admin: Client) -> None:
    waiting = admin.send("review-text", {"message": "a text long enough to wait for its reviewer's approval"})
    wait_for(lambda: admin.get_event(waiting.event_id).status is EventStatus.WAITING, what="the review to wait")
    cancelled = admin.send("review-text", {"message": "another text long enough to wait for a reviewer's approval"})

    signalled = run("signal", waiting.event_id, "approval", '{"reviewed_by": "ada"}')
    cancel = run("cancel", cancelled.event_id)
    again = run("cancel", cancelled.event_id)
    retry = run("retry", cancelled.event_id)

    assert signalled.exit_code == 0, signalled.output
    assert admin.wait(waiting.event_id, timeout=30).outputs == {
        "message": "A TEXT LONG ENOUGH TO WAIT FOR ITS REVIEWER'S APPROVAL",
        "reviewed_by": "ada",
    }
    assert cancel.stdout == f"event {cancelled.event_id} cancelled\n"
    assert again.exit_code == EXIT_REFUSED and "only an unfinished event" in again.stderr
    assert retry.exit_code == EXIT_REFUSED


@pytest.mark.usefixtures("applied")
def test_a_readers_token_is_refused_a_write_and_no_token_is_told_to_give_one(
    run: Invoke, served: tuple[str, Path]
) -> None:
    reader = run("send", "process-text", '{"message": "m"}', token=READER)
    nobody = run("events", token=None)
    reads = run("events", "-n", "1", token=READER)

    assert reader.exit_code == EXIT_REFUSED and "the reader token may not POST" in reader.stderr
    assert nobody.exit_code == EXIT_REFUSED and "give --token or set MACHINERY_TOKEN" in nobody.stderr
    assert reads.exit_code == 0


@pytest.mark.usefixtures("applied")
def test_render_and_export_work_on_the_server(run: Invoke, tmp_path: Path) -> None:
    drawn = run("render", "process-text", "--format", "dot")
    exported = run("export", "-o", str(tmp_path))
    again = run("apply", "--dry-run", str(tmp_path))

    assert drawn.exit_code == 0 and drawn.stdout.startswith('digraph "process-text"')
    assert exported.exit_code == 0 and (tmp_path / "workflow-review-text.json").exists()
    assert again.exit_code == 0 and "would be" not in again.output and "workflow process-text unchanged" in again.output


def test_run_task_runs_a_fleets_task_ad_hoc_and_waits_for_its_outputs(run: Invoke, admin: Client) -> None:
    echo = FleetTask("echo", (Field("n", FieldType("int")),), (Field("n", FieldType("int")),))
    admin.add_fleet(Fleet("cli-lab", "simulated", FleetSettings(ping_interval=5), (echo,)))
    admin.add_workloads("cli-lab", [Workload("cli-lab", f"w{i}", labels={"rack": str(i)}) for i in range(2)])

    result = run("run-task", "cli-lab", "echo", '{"n": 1}', "--selector", "rack=0", "--wait", "--timeout", "30")
    unlabelled = run("run-task", "cli-lab", "echo", '{"n": 1}', "--selector", "rack")

    assert result.exit_code == 0, result.output
    outputs = json.loads(result.stdout[result.stdout.index("{") :])
    # No host runs in this server: the workload is not up, and says so.
    assert outputs == {"results": {}, "skipped": [{"workload": "w0", "reason": "not up: initializing"}], "failed": []}
    assert unlabelled.exit_code == 2 and "KEY=VALUE" in unlabelled.output
