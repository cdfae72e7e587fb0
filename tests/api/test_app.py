"""The app factory, the health check and the documentation the app serves."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from machinery.api import create_app
from machinery.bootstrap import Config, Machinery
from machinery.services.prober import HealthProber
from tests.support import free_port


def test_without_a_machinery_the_app_builds_one_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MACHINERY_DATA_DIR", str(tmp_path))
    app = create_app()
    machinery = app.extensions["machinery"]
    assert isinstance(machinery, Machinery)
    assert machinery.config.data_dir == tmp_path
    machinery.store.close()


def test_the_app_serves_the_machinery_it_is_given(machinery: Machinery) -> None:
    assert create_app(machinery).extensions["machinery"] is machinery


def test_flask_settings_come_from_the_environment_and_then_from_the_config_given(
    machinery: Machinery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MACHINERY_FLASK_MAX_CONTENT_LENGTH", "2048")
    monkeypatch.setenv("MACHINERY_FLASK_SECRET_KEY", "from-env")
    app = create_app(machinery, {"SECRET_KEY": "from-config"})
    assert app.config["MAX_CONTENT_LENGTH"] == 2048
    assert app.config["SECRET_KEY"] == "from-config"


def test_request_bodies_are_limited_to_one_mebibyte_by_default(machinery: Machinery) -> None:
    assert create_app(machinery).config["MAX_CONTENT_LENGTH"] == 1024 * 1024


def test_the_healthcheck_answers_204_with_no_body(client: FlaskClient) -> None:
    response = client.get("/healthcheck")
    assert response.status_code == 204
    assert response.data == b""


def test_the_openapi_document_is_valid_and_lists_every_path(client: FlaskClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json
    assert document["openapi"] == "3.0.3"
    assert document["info"]["title"] == "machinery"
    assert set(document["paths"]) == {
        "/healthcheck",
        "/readiness",
        "/health/services",
        "/services",
        "/services/{name}",
        "/executables",
        "/executables/{name}",
        "/executables/{name}/check",
        "/executables/{name}/rules.svg",
        "/workflows",
        "/workflows/{key}",
        "/e/{workflow}",
        "/events",
        "/events/retry",
        "/events/{event_id}",
        "/events/{event_id}/cancel",
        "/events/{event_id}/pause",
        "/events/{event_id}/resume",
        "/events/{event_id}/rerun",
        "/events/{event_id}/retry",
        "/events/{event_id}/signals/{name}",
        "/events/{event_id}/steps/{step_id}/items",
        "/callbacks/{token}",
        "/callbacks/{token}/heartbeat",
        "/workflows/{key}/graph",
        "/workflows/{key}/graph.{suffix}",
        "/events/{event_id}/graph",
        "/events/{event_id}/graph.{suffix}",
        "/whoami",
        "/schedules",
        "/schedules/{key}",
        "/schedules/{key}/pause",
        "/schedules/{key}/resume",
        "/schedules/{key}/next",
        "/schedules/{key}/events",
        "/fleets",
        "/fleets/{name}",
        "/fleets/{name}/workloads",
        "/fleets/{name}/workloads/{workload}",
        "/fleets/{name}/events",
        "/fleets/{name}/counts",
        "/fleets/{name}/workloads/{workload}/events",
        "/fleets/{name}/tasks",
        "/fleets/{name}/runs",
        "/hosts",
    }
    schemathesis.openapi.from_dict(document).validate()


def test_errors_are_documented_in_the_one_shape_the_api_answers(client: FlaskClient) -> None:
    error = client.get("/openapi.json").json["components"]["schemas"]["Error"]
    assert set(error["properties"]) == {"code", "status", "message", "errors", "problems"}


def test_swagger_ui_is_served_at_docs_with_its_assets_from_the_app_itself(client: FlaskClient) -> None:
    page = client.get("/docs", follow_redirects=True)
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert '"url": "/openapi.json"' in html
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    assert any(a.endswith("swagger-ui.css") for a in assets)
    for asset in assets:
        assert asset.startswith("/docs/"), f"{asset} would be fetched from elsewhere"
        assert client.get(asset).status_code == 200, asset


def test_the_metrics_count_the_events_of_each_workflow_by_status_in_prometheus_text_format(
    client: FlaskClient, machinery: Machinery, workflow: dict[str, Any]
) -> None:
    completed = client.post("/e/process-text", json={"data": {"message": "a b"}}).json["event_id"]
    machinery.runner.run(completed, "upper")
    client.post("/e/process-text", json={"data": {"message": "c d"}})

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    events = {s.labels["status"]: s.value for s in families["machinery_events"].samples}
    assert {s.labels["workflow"] for s in families["machinery_events"].samples} == {"process-text"}
    assert events == {
        "accepted": 1,
        "completed": 1,
        "running": 0,
        "waiting": 0,
        "paused": 0,
        "failed": 0,
        "cancelled": 0,
    }
    assert families["machinery_events_overdue"].samples[0].value == 0
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    ended = families["machinery_event_duration_seconds"].samples
    assert [s.value for s in ended if s.name.endswith("_count")] == [1]
    assert {s.labels["service"] for s in families["machinery_call_duration_seconds"].samples} == {
        "upper",
        "reverse",
        "space-counter",
    }


def test_readiness_answers_200_when_the_store_is_reachable_and_the_workers_run_in_the_api(client: FlaskClient) -> None:
    response = client.get("/readiness")
    assert response.status_code == 200
    assert response.json == {"store": "ok", "broker": "embedded"}


def test_readiness_answers_503_naming_the_broker_it_cannot_reach(tmp_path: Path) -> None:
    machinery = Machinery(Config(data_dir=tmp_path, broker_url=f"redis://127.0.0.1:{free_port()}/0"))
    client = create_app(machinery, {"TESTING": True}).test_client()

    response = client.get("/readiness")

    assert response.status_code == 503
    assert response.json["message"].startswith("not ready: the broker cannot be reached: ")
    assert "store" not in response.json["message"]
    machinery.store.close()


def test_the_health_of_each_probed_service_is_listed_and_measured(
    client: FlaskClient, machinery: Machinery, serve: Callable[[list[Any]], str]
) -> None:
    address = serve([(200, {})]).removesuffix("/event")
    down = f"http://127.0.0.1:{free_port()}"
    for name, base in (("reachable", address), ("gone", down)):
        service = {"name": name, "address": f"{base}/event", "healthcheck": f"{base}/healthcheck"}
        assert client.post("/services", json=service | {"inputs": [], "outputs": []}).status_code == 201
    prober = HealthProber(machinery.store, machinery.dispatcher, down_after=1, interval=10.0, timeout=1.0)
    prober.probe()

    listed = client.get("/health/services").json

    assert [(p["service"], p["status"], p["failures"]) for p in listed] == [("gone", "down", 1), ("reachable", "up", 0)]
    assert listed[0]["error"].startswith(f"GET {down}/healthcheck failed")
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    up = {s.labels["service"]: s.value for s in families["machinery_service_up"].samples}
    assert up == {"gone": 0, "reachable": 1}
