"""Prometheus metrics at ``/metrics``: how much work there is, read from the store at each scrape, and how long
the work took (:mod:`machinery.telemetry`).

The counts come from the store (events from counters it keeps as they change, so a scrape costs the same
however many there are), so that every API instance reports the same figures whatever process
did the work; the timings are those of the processes that did it, and the API's own process adds its resource
use. Like the API, ``/metrics`` needs a bearer
token when tokens are configured, of any role (a reader's will do), and it stays out of the OpenAPI document.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from machinery.api.auth import requires
from machinery.api.blueprint import EXTENSION, current_machinery
from machinery.bootstrap import Role
from machinery.engine.fleets import WorkloadState
from machinery.engine.health import UP
from machinery.engine.ports import every
from machinery.engine.state import EventStatus

bp = Blueprint("metrics", __name__)
_REGISTRY = "machinery.metrics"


class StoreCollector(Collector):
    """Events by workflow and status, overdue events, the calls of services that limit them, services' health."""

    def collect(self) -> Iterator[Metric]:
        machinery = current_machinery()
        statistics = machinery.store.statistics(time.time())
        names = {w.id or w.name: w.name for w in every(machinery.registry.list_workflows)}
        counts = dict.fromkeys(((workflow_id, s.value) for workflow_id in names for s in EventStatus), 0)
        counts.update(statistics.events)
        events = GaugeMetricFamily(
            "machinery_events", "Events stored, by workflow and status", labels=["workflow", "status"]
        )
        for (workflow_id, status), count in sorted(counts.items()):
            # A deleted workflow's events keep its id.
            events.add_metric([names.get(workflow_id, workflow_id), status], count)
        yield events
        yield GaugeMetricFamily(
            "machinery_events_overdue",
            "Unfinished events that the sweeper should have moved on by now; a lasting rise means stuck workers",
            value=statistics.overdue,
        )
        in_flight = GaugeMetricFamily(
            "machinery_service_calls_in_flight", "Calls under way to a service that limits them", labels=["service"]
        )
        waiting = GaugeMetricFamily(
            "machinery_service_calls_waiting",
            "Calls waiting for a slot of a service that limits them, or for a service found down to be up",
            labels=["service"],
        )
        for service, (held, queued) in sorted(statistics.slots.items()):
            in_flight.add_metric([service], held)
            waiting.add_metric([service], queued)
        yield in_flight
        yield waiting
        up = GaugeMetricFamily(
            "machinery_service_up", "1 if the last probe of a service's health check succeeded", labels=["service"]
        )
        for service, health in sorted(machinery.store.health().items()):
            up.add_metric([service], 1 if health.status == UP else 0)
        yield up
        yield from _fleet_metrics(machinery.store.count_workloads())


def _fleet_metrics(counts: dict[tuple[str, str | None, str], int]) -> Iterator[Metric]:
    """Workloads by fleet and state, and by host (every state but dead), from one count by the store."""
    by_state: dict[tuple[str, str], int] = {}
    by_host: dict[str, int] = {}
    for (fleet, host, state), count in counts.items():
        by_state[fleet, state] = by_state.get((fleet, state), 0) + count
        if host is not None and state != WorkloadState.DEAD:
            by_host[host] = by_host.get(host, 0) + count
    workloads = GaugeMetricFamily("machinery_workloads", "Workloads by fleet and state", labels=["fleet", "state"])
    for (fleet, state), count in sorted(by_state.items()):
        workloads.add_metric([fleet, state], count)
    yield workloads
    hosted = GaugeMetricFamily("machinery_host_workloads", "Workloads a fleet host holds", labels=["host"])
    for host, count in sorted(by_host.items()):
        hosted.add_metric([host], count)
    yield hosted


@bp.get("/metrics")
@requires(Role.READER)
def metrics() -> Response:
    return Response(generate_latest(current_app.extensions[_REGISTRY]), content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    registry = CollectorRegistry()
    registry.register(StoreCollector())
    app.extensions[EXTENSION].telemetry.register(registry)
    ProcessCollector(registry=registry)
    app.extensions[_REGISTRY] = registry
    app.register_blueprint(bp)
