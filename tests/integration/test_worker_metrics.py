"""A worker's metrics, scraped from the worker itself: the calls made by every process of its prefork pool."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from machinery.bootstrap import Machinery
from tests.integration.conftest import WorkerProcess
from tests.support import finished, free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("broker_url", ["redis"], indirect=True)]


@pytest.fixture
def env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    directory = tmp_path / "metrics"
    directory.mkdir()
    return {**env, "PROMETHEUS_MULTIPROC_DIR": str(directory)}


def test_a_prefork_worker_serves_the_timings_of_every_pool_process(
    machinery: Machinery, example_services: dict[str, object], start_worker: Callable[..., WorkerProcess]
) -> None:
    port = free_port()
    start_worker(2, ("--metrics-port", str(port)))
    sent = [machinery.events.submit("process-text", {"message": f"m {i}"})[0].id for i in range(6)]
    for event_id in sent:
        assert finished(machinery.events, event_id).status.value == "completed"

    def scraped() -> dict[str, float] | None:
        try:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        except requests.ConnectionError:
            return None
        samples = {
            (s.name, s.labels.get("service", s.labels.get("status", ""))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        return samples if samples.get(("machinery_event_duration_seconds_count", "completed")) == 6 else None

    samples = wait_for(scraped, timeout=20, what="the worker's metrics to count the six events")
    for service in ("upper", "reverse", "space-counter"):
        assert samples[("machinery_call_duration_seconds_count", service)] == 6
        assert samples[("machinery_attempts_total", service)] == 6
