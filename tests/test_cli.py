"""The command line, through click's CliRunner, on the embedded store in a temporary folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner, Result

from examples.services import DEFINITIONS
from machinery import logs
from machinery.bootstrap import DAY, Config, Machinery
from machinery.cli import EXIT_INVALID, EXIT_REFUSED, main
from machinery.engine.plan import Settings
from machinery.engine.state import EventStatus
from machinery.runtime import Events
from machinery.server import CONNECTIONS_PER_THREAD, DEFAULT_THREADS, GRACEFUL_TIMEOUT, Server
from tests.support import free_port, reachable, wait_for

SEED = Path(__file__).parent / "fixtures" / "seed"
Invoke = Callable[..., Result]


@pytest.fixture
def run(tmp_path: Path) -> Invoke:
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(main, list(args), env={"MACHINERY_DATA_DIR": str(tmp_path / "data")})

    return invoke


def test_help_lists_every_command(run: Invoke) -> None:
    result = run("--help")

    assert result.exit_code == 0
    for command in ("serve", "worker", "apply", "export", "import", "render", "purge"):
        assert command in result.output


def test_apply_registers_the_examples_then_finds_them_unchanged(run: Invoke) -> None:
    first = run("apply", str(DEFINITIONS))
    second = run("apply", str(DEFINITIONS))

    assert first.exit_code == 0, first.output
    assert "service upper created" in first.output and "workflow process-text created" in first.output
    assert "workflow process-text unchanged" in second.output


def test_apply_refuses_the_seeds_workflow_and_names_the_problem(run: Invoke) -> None:
    result = run("apply", str(SEED / "service-upper.json"), str(SEED / "service-reverse.json"),
                 str(SEED / "service-space-counter.json"), str(SEED / "workflow-process-text.json"))  # fmt: skip

    assert result.exit_code == EXIT_REFUSED
    assert "space_count" in result.output


def test_apply_refuses_a_file_that_is_no_definition(run: Invoke, tmp_path: Path) -> None:
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"name": "x"}))

    result = run("apply", str(odd))

    assert result.exit_code == EXIT_INVALID
    assert "neither a service" in result.output


def test_export_writes_what_apply_accepts(run: Invoke, tmp_path: Path) -> None:
    assert run("apply", str(DEFINITIONS)).exit_code == 0
    out = tmp_path / "exported"

    exported = run("export", "-o", str(out))
    again = run("apply", str(out))

    assert exported.exit_code == 0
    assert sorted(p.name for p in out.glob("*.json")) == sorted(
        p.name for p in DEFINITIONS.glob("*.json") if not p.name.startswith("event-")
    )
    assert again.exit_code == 0 and "created" not in again.output and "updated" not in again.output


def test_export_redacts_literal_credentials_which_apply_refuses_and_keeps_secret_references(
    run: Invoke, tmp_path: Path
) -> None:
    service = json.loads((DEFINITIONS / "service-upper.json").read_text())
    headers = {"Authorization": {"secret": "UPPER_TOKEN"}, "X-Api-Key": "s3cr3t"}
    (tmp_path / "upper.json").write_text(json.dumps(service | {"headers": headers}))
    assert run("apply", str(tmp_path / "upper.json")).exit_code == 0
    rotated = {"Authorization": {"secret": "UPPER_TOKEN"}, "X-Api-Key": "rotated"}
    (tmp_path / "upper.json").write_text(json.dumps(service | {"headers": rotated}))
    assert "service upper updated" in run("apply", str(tmp_path / "upper.json")).output

    assert run("export", "-o", str(tmp_path / "out")).exit_code == 0
    exported = tmp_path / "out" / "service-upper.json"
    again = run("apply", str(exported))

    assert json.loads(exported.read_text())["headers"] == headers | {"X-Api-Key": "<redacted>"}
    assert again.exit_code == EXIT_INVALID
    assert "X-Api-Key" in again.output and "secret" in again.output


def test_import_refuses_a_document_missing_a_key_it_needs(run: Invoke, tmp_path: Path) -> None:
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps({"digraph": [0], "nodes": [{"id": 1}]}))

    result = run("import", str(graph))

    assert result.exit_code == EXIT_INVALID
    assert result.stderr == f"error: {graph}: cannot convert: 'name' is missing\n"


def test_a_setting_that_cannot_be_read_is_said_and_refused(tmp_path: Path) -> None:
    env = {"MACHINERY_DATA_DIR": str(tmp_path), "MACHINERY_CONCURRENCY": "many"}

    result = CliRunner().invoke(main, ["purge", "--older-than", "1"], env=env)

    assert result.exit_code == EXIT_INVALID
    assert result.stderr == "error: MACHINERY_CONCURRENCY should be a number, not 'many'\n"


def test_import_converts_an_orchy_workflow_and_warns_about_javascript(run: Invoke) -> None:
    result = run("import", str(SEED / "orchy-test-workflow.json"))

    assert result.exit_code == 0
    workflow = json.loads(result.stdout)
    assert [s["id"] for s in workflow["steps"]] == ["1", "6", "7", "2", "3", "4"]
    assert "JavaScript" in result.stderr


def test_serve_answers_on_its_port_and_runs_events_in_its_own_process(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "MACHINERY_DATA_DIR": str(tmp_path)}
    env.pop("MACHINERY_BROKER_URL", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "machinery", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: reachable("127.0.0.1", port), timeout=30, what="machinery serve to listen")
        assert requests.get(f"{base}/healthcheck", timeout=5).status_code == 204
        workflow = {
            "name": "later",
            "steps": [{"id": "pause", "kind": "delay", "seconds": 0.2}],
        }
        assert requests.post(f"{base}/workflows", json=workflow, timeout=5).status_code == 201
        event_id = requests.post(f"{base}/e/later", json={"data": {}}, timeout=5).json()["event_id"]

        done = wait_for(
            lambda: (e := requests.get(f"{base}/events/{event_id}", timeout=5).json())["status"] == "completed" and e,
            timeout=30,
            what="the event to complete",
        )
        assert done["steps"][0]["status"] == "completed"
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Server]:
    """The gunicorn apps `serve` builds, kept rather than run; logging is left as it is."""
    built: list[Server] = []
    monkeypatch.setattr(Server, "run", lambda server: built.append(server))
    monkeypatch.setattr(logs, "configure", lambda *args: None)
    return built


def test_serve_builds_a_gunicorn_app_with_the_processes_and_threads_asked(served: list[Server], tmp_path: Path) -> None:
    env = {"MACHINERY_DATA_DIR": str(tmp_path), "MACHINERY_BROKER_URL": "redis://127.0.0.1:6379/13"}

    result = CliRunner().invoke(
        main, ["serve", "--host", "0.0.0.0", "--port", "9000", "-w", "3", "--threads", "5"], env=env
    )

    assert result.exit_code == 0, result.output
    (server,) = served
    assert server.cfg.bind == ["0.0.0.0:9000"]
    assert (server.cfg.workers, server.cfg.threads, server.cfg.worker_class_str) == (3, 5, "gthread")
    assert server.cfg.worker_connections == 5 * CONNECTIONS_PER_THREAD
    assert server.cfg.graceful_timeout == GRACEFUL_TIMEOUT and not server.cfg.preload_app
    assert server.machinery is None, "each worker process makes its own, after the fork"


def test_serve_without_a_broker_runs_one_process_whatever_is_asked(served: list[Server], tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["serve", "-w", "4"], env={"MACHINERY_DATA_DIR": str(tmp_path), "MACHINERY_BROKER_URL": ""}
    )

    assert result.exit_code == 0, result.output
    assert (served[0].cfg.workers, served[0].cfg.threads) == (1, DEFAULT_THREADS)


def test_render_draws_a_registered_workflow_and_names_an_unknown_one(run: Invoke) -> None:
    assert run("apply", str(DEFINITIONS)).exit_code == 0

    dot = run("render", "process-text", "--format", "dot")
    svg = run("render", "process-text")
    unknown = run("render", "nope")

    assert dot.exit_code == 0 and "digraph" in dot.stdout and "space-counter" in dot.stdout
    assert svg.exit_code == 0 and "<svg" in svg.stdout
    assert unknown.exit_code == EXIT_REFUSED and "nope" in unknown.output


def test_purge_deletes_the_finished_events_older_than_asked_and_keeps_the_others(run: Invoke, tmp_path: Path) -> None:
    assert run("apply", str(DEFINITIONS)).exit_code == 0
    machinery = Machinery(Config(data_dir=tmp_path / "data"))
    now = time.time()

    def sent(age_in_days: float, status: str) -> str:
        """An event sent ``age_in_days`` ago, that is now ``status``."""
        events = Events(machinery.store, machinery.store, machinery.dispatcher, Settings(), machinery.plans,
                        clock=lambda: now - age_in_days * DAY)  # fmt: skip
        event = events.submit("process-text", {"message": "m"})[0]
        event.status = EventStatus(status)
        assert machinery.store.save_event(event)
        return event.id

    sent(3, "completed")
    recent, unfinished = sent(1, "failed"), sent(3, "running")

    result = run("purge", "--older-than", "2")

    assert (result.exit_code, result.output) == (0, "deleted 1 finished events\n")
    assert {e.id for e in machinery.store.list_events(workflow_id=None, status=None, offset=0, limit=10).items} == {
        recent,
        unfinished,
    }
    assert run("purge", "--older-than", "0").exit_code == 2
    machinery.store.close()


def test_apply_registers_a_workflow_after_the_child_workflows_it_runs(run: Invoke, tmp_path: Path) -> None:
    parent = json.loads((DEFINITIONS / "workflow-shout-summary.json").read_text())
    (tmp_path / "a-parent.json").write_text(json.dumps(parent))
    for name in ("upper", "reverse", "space-counter"):
        (tmp_path / f"service-{name}.json").write_text((DEFINITIONS / f"service-{name}.json").read_text())
    (tmp_path / "z-child.json").write_text((DEFINITIONS / "workflow-process-text.json").read_text())

    result = run("apply", str(tmp_path))

    assert result.exit_code == 0, result.output
    assert result.output.index("workflow process-text created") < result.output.index("workflow shout-summary created")


def test_recount_counts_the_events_again(run: Invoke, tmp_path: Path) -> None:
    assert run("apply", str(DEFINITIONS)).exit_code == 0
    machinery = Machinery(Config(data_dir=tmp_path / "data"))
    machinery.events.submit("process-text", {"message": "m"})
    machinery.store._db().execute("UPDATE event_counts SET count = 7")  # type: ignore[attr-defined]

    result = run("recount")

    assert (result.exit_code, result.output) == (0, "counted the events again\n")
    assert set(machinery.store.statistics(0.0).events.values()) == {1}
    machinery.store.close()


def test_apply_registers_the_commands_example_and_export_writes_its_executable(tmp_path: Path) -> None:
    env = {"MACHINERY_DATA_DIR": str(tmp_path / "data"), "MACHINERY_COMMANDS_ALLOWED": "/usr/bin"}
    runner = CliRunner()

    applied = runner.invoke(main, ["apply", str(DEFINITIONS), str(DEFINITIONS / "commands")], env=env)
    again = runner.invoke(main, ["apply", str(DEFINITIONS / "commands")], env=env)
    exported = runner.invoke(main, ["export", "-o", str(tmp_path / "out")], env=env)

    assert applied.exit_code == 0, applied.output
    assert "executable sort created" in applied.output and "service sort-lines created" in applied.output
    assert "workflow sort-text created" in applied.output
    assert "executable sort unchanged" in again.output and "service sort-lines unchanged" in again.output
    assert exported.exit_code == 0, exported.output
    written = json.loads((tmp_path / "out" / "executable-sort.json").read_text())
    assert written == json.loads((DEFINITIONS / "commands" / "executable-sort.json").read_text()) | {
        "parameters": written["parameters"]
    }
    assert json.loads((tmp_path / "out" / "service-sort-lines.json").read_text())["executable"] == "sort"


def test_apply_refuses_an_executable_outside_the_allowed_paths(run: Invoke) -> None:
    result = run("apply", str(DEFINITIONS / "commands" / "executable-sort.json"))
    assert result.exit_code == EXIT_REFUSED
    assert "MACHINERY_COMMANDS_ALLOWED lists no path" in result.stderr


def test_import_converts_otos_parameters_into_an_executable_that_applies(run: Invoke, tmp_path: Path) -> None:
    out = tmp_path / "nmap.json"
    result = run("import", str(SEED.parent / "oto-parameters.json"), "-o", str(out))

    assert result.exit_code == 0, result.output
    assert "its path is guessed as /usr/bin/nmap" in result.stderr
    assert json.loads(out.read_text())["name"] == "nmap"


def test_a_worker_for_commands_needs_the_programs_it_may_run(run: Invoke) -> None:
    result = run("worker", "--commands")
    assert result.exit_code == 2
    assert "MACHINERY_COMMANDS_ALLOWED" in result.output
    assert "add --commands" in run("worker", "--allow-root").output


def test_a_host_name_is_for_a_worker_that_hosts_fleets(run: Invoke) -> None:
    result = run("worker", "--host-name", "a")
    assert result.exit_code == 2
    assert "add --fleets" in result.output
