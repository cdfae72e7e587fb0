"""`machinery serve` as a process: gunicorn finishes the requests under way on SIGTERM, and logs JSON lines."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
from click.testing import CliRunner

from machinery.cli import main
from machinery.client import Client
from machinery.engine.fleets import Fleet, FleetSettings, FleetTask, Workload, WorkloadState
from machinery.engine.model import Field
from machinery.engine.state import EventStatus
from machinery.engine.types import FieldType
from machinery.store.sqlite import SqliteStore
from tests.served import machinery_serve
from tests.support import free_port, reachable, wait_for

ROOT = Path(__file__).resolve().parent.parent


def test_a_request_under_way_at_sigterm_completes_before_the_server_exits(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "MACHINERY_DATA_DIR": str(tmp_path), "MACHINERY_LOG_FORMAT": "json"}
    env.pop("MACHINERY_BROKER_URL", None)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "machinery", "serve", "--port", str(port)], cwd=ROOT, env=env, stderr=out
        )
    base = f"http://127.0.0.1:{port}"
    answers: list[requests.Response] = []
    try:
        wait_for(lambda: reachable("127.0.0.1", port), timeout=30, what="machinery serve to listen")
        workflow = {"name": "later", "steps": [{"id": "pause", "kind": "delay", "seconds": 60}]}
        assert requests.post(f"{base}/workflows", json=workflow, timeout=5).status_code == 201

        # Another connection holds the database's write lock, so that accepting an event waits for it.
        lock = sqlite3.connect(tmp_path / "machinery.db", isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        send = threading.Thread(
            target=lambda: answers.append(requests.post(f"{base}/e/later", json={"data": {}}, timeout=30))
        )
        send.start()
        time.sleep(0.5)
        server.send_signal(signal.SIGTERM)
        time.sleep(1)
        assert server.poll() is None and send.is_alive(), "the server waits for the request under way"
        lock.close()
        send.join(30)

        assert server.wait(30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    (answer,) = answers
    assert answer.status_code == 202
    store = SqliteStore(tmp_path / "machinery.db")
    assert store.get_event(answer.json()["event_id"]).status == "waiting"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    messages = [line["message"] for line in lines]
    assert "Handling signal: term" in messages
    assert any('"POST /e/later HTTP/1.1" 202' in m for m in messages), "the access log is in JSON too"


def test_serve_fleets_hosts_the_fleets_in_its_one_process_and_runs_their_tasks(tmp_path: Path) -> None:
    echo = FleetTask("echo", (Field("n", FieldType("int")),), (Field("n", FieldType("int")),))
    settings = FleetSettings(ping_interval=0.5)
    with machinery_serve(tmp_path, options=["--fleets"]) as url, Client(url) as client:
        client.add_fleet(Fleet("lab", "simulated", settings, (echo,)))
        client.add_workloads("lab", [Workload("lab", f"w{i}", labels={"rack": str(i % 2)}) for i in range(6)])
        wait_for(lambda: len(client.list_workloads("lab", state=WorkloadState.UP)) == 6, timeout=30, what="all up")

        ack = client.run_task("lab", "echo", {"n": 2}, {"rack": "1"})
        done = client.wait(ack.event_id, timeout=30)

    assert done.status is EventStatus.COMPLETED
    assert done.outputs == {"results": {f"w{i}": {"n": 2} for i in (1, 3, 5)}, "skipped": [], "failed": []}


def test_serve_fleets_with_a_broker_says_where_fleets_are_hosted_then() -> None:
    result = CliRunner().invoke(main, ["serve", "--fleets"], env={"MACHINERY_BROKER_URL": "redis://127.0.0.1:6379/9"})

    assert result.exit_code == 2 and "machinery worker --fleets" in result.output
