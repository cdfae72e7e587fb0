"""Prometheus metrics of the work done: calls, steps and events, timed where they happen.

Every process that runs steps (the API with its in-process workers, each worker's pool process) records into
the metrics here. A prefork pool's processes each hold their own, so under one the figures are summed from
the files of prometheus-client's multiprocess mode: with ``PROMETHEUS_MULTIPROC_DIR`` set (to an empty
directory, emptied at each start, as its documentation asks, before any process starts), the exposition reads
every process's files; without it, the figures are this process's own.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

# From a millisecond (a transform) to an hour (a callback, a delay).
_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class PrometheusTelemetry:
    """The :class:`~machinery.engine.ports.Telemetry` of the runtime, as Prometheus histograms and counters."""

    def __init__(self) -> None:
        # In no registry: :meth:`register` exposes them, from this process or from every process's files.
        self.calls = Histogram(
            "machinery_call_duration_seconds",
            "Calls of services, from the request sent to the answer read",
            ["workflow", "service"],
            buckets=_BUCKETS,
            registry=None,
        )
        self.attempts = Counter(
            "machinery_attempts", "Calls of services made, each attempt counted", ["workflow", "service"], registry=None
        )
        self.failures = Counter(
            "machinery_failures",
            "Calls of services that failed, by error kind (transient ones included, whether retried or not)",
            ["workflow", "service", "kind"],
            registry=None,
        )
        self.steps = Histogram(
            "machinery_step_duration_seconds",
            "Steps that completed or failed, from their start (their last attempt's, for a step that calls)",
            ["workflow", "kind", "service", "status"],
            buckets=_BUCKETS,
            registry=None,
        )
        self.events = Histogram(
            "machinery_event_duration_seconds",
            "Events that ended, from their acceptance, by final status",
            ["workflow", "status"],
            buckets=_BUCKETS,
            registry=None,
        )

        self.pings = Histogram(
            "machinery_fleet_ping_duration_seconds",
            "Pings of workloads by the fleet hosts, by outcome (up or failed)",
            ["fleet", "host", "outcome"],
            buckets=_BUCKETS,
            registry=None,
        )

    def ping_done(self, fleet: str, host: str, seconds: float, ok: bool) -> None:
        self.pings.labels(fleet, host, "up" if ok else "failed").observe(max(seconds, 0.0))

    def call_done(self, workflow: str, service: str, seconds: float, error: str | None) -> None:
        self.calls.labels(workflow, service).observe(seconds)
        self.attempts.labels(workflow, service).inc()
        if error is not None:
            self.failures.labels(workflow, service, error).inc()

    def step_ended(self, workflow: str, kind: str, service: str | None, status: str, seconds: float) -> None:
        self.steps.labels(workflow, kind, service or "", status).observe(max(seconds, 0.0))

    def event_ended(self, workflow: str, status: str, seconds: float) -> None:
        self.events.labels(workflow, status).observe(max(seconds, 0.0))

    def register(self, registry: CollectorRegistry) -> None:
        """Expose the metrics in ``registry``: every process's, in multiprocess mode, else this process's."""
        if os.environ.get(MULTIPROCESS_DIR):
            MultiProcessCollector(registry)
            return
        for metric in (self.calls, self.attempts, self.failures, self.steps, self.events, self.pings):
            registry.register(metric)


def clear_multiprocess_dir() -> None:
    """Empty the multiprocess directory of a previous run's files, as a process that starts the others must."""
    directory = os.environ.get(MULTIPROCESS_DIR)
    if directory:
        for path in Path(directory).glob("*.db"):
            path.unlink(missing_ok=True)
