"""The API of fleets: fleets registered like services, workloads in bulk, filters, events and hosts."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from machinery.bootstrap import Machinery
from machinery.engine.fleets import Host, Workload, WorkloadState

FLEET = {
    "name": "routers",
    "driver": "simulated",
    "settings": {"ping_interval": 5, "max_spread": 2},
    "tasks": [{"name": "reboot", "inputs": [{"name": "delay", "type": "int"}], "outputs": []}],
}


@pytest.fixture
def fleet(client: FlaskClient) -> dict[str, Any]:
    response = client.post("/fleets", json=FLEET)
    assert response.status_code == 201, response.json
    return response.json


def workloads(count: int, **labels: str) -> list[dict[str, Any]]:
    return [{"name": f"r{i:04d}", "labels": labels, "config": {"latency": 0}} for i in range(count)]


def test_a_fleet_is_registered_read_replaced_and_removed(client: FlaskClient, fleet: dict[str, Any]) -> None:
    assert fleet["version"] == 1 and fleet["settings"]["ping_interval"] == 5.0
    assert fleet["settings"]["dead_after"] == 3
    assert fleet["tasks"][0]["inputs"][0]["type"] == "int"
    assert [f["name"] for f in client.get("/fleets").json] == ["routers"]
    replaced = client.put("/fleets/routers", json={**FLEET, "settings": {"ping_interval": 1}})
    assert replaced.status_code == 200 and replaced.json["version"] == 2
    assert client.delete("/fleets/routers").status_code == 204
    assert client.get("/fleets/routers").status_code == 404


def test_a_fleet_with_an_unknown_driver_or_bad_settings_is_refused(client: FlaskClient) -> None:
    unknown = client.post("/fleets", json={**FLEET, "driver": "telnet"})
    assert unknown.status_code == 422 and "no driver 'telnet'" in unknown.json["message"]
    bad = client.post("/fleets", json={**FLEET, "settings": {"ping_jitter": 3}})
    assert bad.status_code == 422


def test_thousands_of_workloads_are_added_and_removed_in_one_request(
    client: FlaskClient, fleet: dict[str, Any], machinery: Machinery
) -> None:
    added = client.post("/fleets/routers/workloads", json={"workloads": workloads(5000)})
    assert added.status_code == 201 and len(added.json["names"]) == 5000
    again = client.post("/fleets/routers/workloads", json={"workloads": workloads(5001)})
    assert again.json["names"] == ["r5000"]
    removed = client.delete("/fleets/routers/workloads", json={"names": ["r0001", "r0002", "nobody"]})
    assert removed.status_code == 200 and removed.json["names"] == ["r0001", "r0002"]
    events = client.get("/fleets/routers/workloads/r0001/events").json
    assert [e["kind"] for e in events] == ["removed", "added"]
    assert machinery.store.count_workloads("routers") == {("routers", None, "initializing"): 4999}


def test_workloads_the_driver_refuses_are_not_added(client: FlaskClient, fleet: dict[str, Any]) -> None:
    response = client.post(
        "/fleets/routers/workloads", json={"workloads": [{"name": "r1", "config": {"failure_rate": 7}}]}
    )
    assert response.status_code == 422 and "workload 'r1': config.failure_rate" in response.json["message"]
    assert client.get("/fleets/routers/workloads").json["items"] == []


def test_workloads_are_listed_by_state_label_and_host_a_page_after_another(
    client: FlaskClient, fleet: dict[str, Any], machinery: Machinery
) -> None:
    client.post("/fleets/routers/workloads", json={"workloads": workloads(3, site="lund")})
    client.post("/fleets/routers/workloads", json={"workloads": [{"name": "x1", "labels": {"site": "oslo"}}]})
    machinery.store.claim_workloads("routers", ["r0000", "x1"], "h1", now=0.0, until=1e12)
    up = machinery.store.get_workload("routers", "r0000")
    machinery.store.save_workload(Workload(**{**up.__dict__, "state": WorkloadState.UP}))

    def names(query: str) -> list[str]:
        response = client.get(f"/fleets/routers/workloads?{query}")
        assert response.status_code == 200, response.json
        return [w["name"] for w in response.json["items"]]

    assert names("label=site=lund") == ["r0000", "r0001", "r0002"]
    assert names("host=h1") == ["r0000", "x1"]
    assert names("state=up&label=site=lund") == ["r0000"]
    first = client.get("/fleets/routers/workloads?limit=2").json
    assert [w["name"] for w in first["items"]] == ["r0000", "r0001"] and first["next"] == "r0001"
    assert names(f"after={first['next']}&limit=2") == ["r0002", "x1"]
    assert client.get("/fleets/routers/workloads?state=asleep").status_code == 422
    assert client.get("/fleets/routers/workloads/x1").json["host"] == "h1"


def test_a_fleet_s_events_are_listed_newest_first(client: FlaskClient, fleet: dict[str, Any]) -> None:
    client.post("/fleets/routers/workloads", json={"workloads": workloads(2)})
    client.delete("/fleets/routers/workloads", json={"names": ["r0000"]})
    events = client.get("/fleets/routers/events").json
    assert [(e["workload"], e["kind"]) for e in events][0] == ("r0000", "removed")
    assert len(events) == 3
    assert client.get("/fleets/nothing/events").status_code == 404


def test_hosts_are_listed_with_what_they_hold(client: FlaskClient, fleet: dict[str, Any], machinery: Machinery) -> None:
    client.post("/fleets/routers/workloads", json={"workloads": workloads(3)})
    machinery.store.heartbeat(Host("h1", 1e12, 1.0))
    machinery.store.heartbeat(Host("h2", 1.0, 0.5))
    machinery.store.claim_workloads("routers", ["r0000", "r0001"], "h1", now=0.0, until=1e12)
    assert client.get("/hosts").json == [
        {"name": "h1", "alive": True, "lease_until": 1e12, "started_at": 1.0, "workloads": {"routers": 2}},
        {"name": "h2", "alive": False, "lease_until": 1.0, "started_at": 0.5, "workloads": {}},
    ]


def test_the_metrics_count_workloads_by_fleet_and_state_and_by_host(
    client: FlaskClient, fleet: dict[str, Any], machinery: Machinery
) -> None:
    client.post("/fleets/routers/workloads", json={"workloads": workloads(3)})
    machinery.store.claim_workloads("routers", ["r0000", "r0001"], "h1", now=0.0, until=1e12)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'machinery_workloads{fleet="routers",state="initializing"} 3.0' in text
    assert 'machinery_host_workloads{host="h1"} 2.0' in text


def test_a_fleet_s_counts_are_by_state_and_by_host(
    client: FlaskClient, fleet: dict[str, Any], machinery: Machinery
) -> None:
    client.post("/fleets/routers/workloads", json={"workloads": workloads(3)})
    machinery.store.claim_workloads("routers", ["r0000", "r0001"], "h1", now=0.0, until=1e12)
    assert client.get("/fleets/routers/counts").json == {
        "states": {"initializing": 3, "up": 0, "unreachable": 0, "dead": 0},
        "hosts": {"h1": 2},
        "unassigned": 1,
    }


def test_an_ad_hoc_task_answers_an_event_of_the_tasks_own_workflow(
    client: FlaskClient, fleet: dict[str, Any], machinery: Machinery
) -> None:
    machinery.store.add_workloads([Workload("routers", "r1", {"site": "lund"})])
    sent = client.post(
        "/fleets/routers/tasks", json={"task": "reboot", "args": {"delay": 3}, "selector": {"site": "lund"}}
    )

    assert sent.status_code == 202, sent.json
    event = client.get(sent.headers["Location"]).json
    assert event["workflow"]["name"] == "routers:reboot"
    assert event["data"] == {"delay": 3, "selector": {"site": "lund"}}
    workflow = client.get("/workflows/routers:reboot").json
    [step] = workflow["steps"]
    assert (step["kind"], step["fleet"], step["task"], step["selector"]) == (
        "fleet",
        "routers",
        "reboot",
        "$.input.selector",
    )
    assert [o["name"] for o in workflow["outputs"]] == ["results", "skipped", "failed"]


def test_an_ad_hoc_task_with_arguments_of_the_wrong_types_or_an_unknown_task_is_refused(
    client: FlaskClient, fleet: dict[str, Any]
) -> None:
    wrong = client.post("/fleets/routers/tasks", json={"task": "reboot", "args": {"delay": "soon"}})
    unknown = client.post("/fleets/routers/tasks", json={"task": "explode"})
    nowhere = client.post("/fleets/switches/tasks", json={"task": "reboot"})

    assert wrong.status_code == 422 and "delay" in str(wrong.json)
    assert unknown.status_code == 404 and "no task 'explode'" in unknown.json["message"]
    assert nowhere.status_code == 404


def test_an_ad_hoc_task_sent_again_with_its_idempotency_key_answers_the_same_event(
    client: FlaskClient, fleet: dict[str, Any]
) -> None:
    body, key = {"task": "reboot", "args": {"delay": 1}}, {"Idempotency-Key": "reboot-lund-1"}
    first = client.post("/fleets/routers/tasks", json=body, headers=key)
    again = client.post("/fleets/routers/tasks", json=body, headers=key)

    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json["event_id"] == first.json["event_id"] and again.headers["Idempotent-Replayed"] == "true"


def test_the_tasks_workflow_follows_the_fleet_when_its_task_changes(client: FlaskClient, fleet: dict[str, Any]) -> None:
    assert client.post("/fleets/routers/tasks", json={"task": "reboot", "args": {"delay": 1}}).status_code == 202
    assert client.post("/fleets/routers/tasks", json={"task": "reboot", "args": {"delay": 2}}).status_code == 202
    assert client.get("/workflows/routers:reboot").json["version"] == 1

    changed = {**FLEET, "tasks": [{"name": "reboot", "inputs": [{"name": "hard", "type": "bool"}], "concurrency": 50}]}
    assert client.put("/fleets/routers", json=changed).status_code == 200
    assert client.post("/fleets/routers/tasks", json={"task": "reboot", "args": {"hard": True}}).status_code == 202

    workflow = client.get("/workflows/routers:reboot").json
    assert workflow["version"] == 2
    assert workflow["steps"][0]["concurrency"] == 50
    assert [i["name"] for i in workflow["inputs"]] == ["hard", "selector"]


def test_a_fleet_change_that_would_break_a_workflow_running_its_task_is_refused(
    client: FlaskClient, fleet: dict[str, Any]
) -> None:
    step = {"id": "reboot", "kind": "fleet", "fleet": "routers", "task": "reboot", "input": {"delay": "$.input.delay"}}
    workflow = {"name": "nightly", "inputs": [{"name": "delay", "type": "int"}], "steps": [step]}
    assert client.post("/workflows", json=workflow).status_code == 201, "type-checked against the fleet's task"
    assert client.post("/fleets/routers/tasks", json={"task": "reboot", "args": {"delay": 1}}).status_code == 202

    breaking = {**FLEET, "tasks": [{"name": "reboot", "inputs": [{"name": "delay", "type": "string"}]}]}
    refused = client.put("/fleets/routers", json=breaking)
    fitting = {**FLEET, "tasks": [{"name": "reboot", "inputs": [{"name": "delay", "type": "float"}]}]}

    assert refused.status_code == 409
    assert "workflow 'nightly'" in refused.json["message"] and "routers:reboot" not in refused.json["message"]
    assert client.put("/fleets/routers", json=fitting).status_code == 200


def test_a_fleets_runs_are_the_latest_events_of_its_tasks_workflows_newest_first(
    client: FlaskClient, fleet: dict[str, Any]
) -> None:
    assert client.get("/fleets/routers/runs").json == [], "no task run yet: no workflow, and no run"
    sent = [client.post("/fleets/routers/tasks", json={"task": "reboot", "args": {"delay": n}}).json for n in range(3)]

    runs = client.get("/fleets/routers/runs?limit=2").json

    assert [run["id"] for run in runs] == [sent[2]["event_id"], sent[1]["event_id"]]
    assert runs[0]["workflow"]["name"] == "routers:reboot" and runs[0]["data"]["delay"] == 2
    assert client.get("/fleets/switches/runs").status_code == 404


def test_a_fleet_whose_tasks_a_workflow_runs_cannot_be_deleted_until_that_workflow_is(
    client: FlaskClient, fleet: dict[str, Any]
) -> None:
    step = {"id": "reboot", "kind": "fleet", "fleet": "routers", "task": "reboot", "input": {"delay": "$.input.delay"}}
    workflow = {"name": "nightly", "inputs": [{"name": "delay", "type": "int"}], "steps": [step]}
    assert client.post("/workflows", json=workflow).status_code == 201
    assert client.post("/fleets/routers/tasks", json={"task": "reboot", "args": {"delay": 1}}).status_code == 202

    refused = client.delete("/fleets/routers")
    assert refused.status_code == 409 and "workflow 'nightly' runs its tasks" in str(refused.json)
    assert client.delete("/workflows/nightly").status_code == 204
    assert client.delete("/fleets/routers").status_code == 204, "its ad hoc runs' workflow does not hold it"
