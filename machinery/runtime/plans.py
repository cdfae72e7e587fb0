"""Workflow versions compiled for running, and the services a worker calls, as it sees them."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from machinery.engine.errors import NotFound
from machinery.engine.expressions import Expressions
from machinery.engine.health import DOWN, Health
from machinery.engine.kinds import fleet as fleet_kind
from machinery.engine.kinds.workflow import contract, contract_key
from machinery.engine.model import Service, Workflow
from machinery.engine.plan import Plan
from machinery.engine.ports import (
    FleetStore,
    RegistryStore,
)
from machinery.engine.state import (
    Event,
)

Clock = Callable[[], float]


class Plans:
    """Compiled workflow versions, by (id, version); versions never change, so they are cached for good."""

    def __init__(self, store: RegistryStore, expressions: Expressions) -> None:
        self.store = store
        self.expressions = expressions
        self._plans: dict[tuple[str, int], Plan] = {}

    def of(self, workflow: Workflow) -> Plan:
        return self._plan((workflow.id or workflow.name, workflow.version), lambda: workflow)

    def for_event(self, event: Event) -> Plan:
        return self.for_version(event.workflow_id, event.workflow_version)

    def for_version(self, workflow_id: str, version: int) -> Plan:
        key = (workflow_id, version)
        return self._plan(key, lambda: self.store.get_workflow_version(*key))

    def _plan(self, key: tuple[str, int], load: Callable[[], Workflow]) -> Plan:
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = Plan.of(load(), self.expressions)
        return plan


class ServiceCache:
    """Service definitions and health as a worker sees them, re-read from the store every ``ttl`` seconds."""

    def __init__(
        self, store: RegistryStore, ttl: float = 2.0, clock: Clock = time.monotonic, fleets: FleetStore | None = None
    ) -> None:
        self.store = store
        self.fleets = fleets
        self.ttl = ttl
        self.clock = clock
        self._cache: dict[str, tuple[float, Service | None]] = {}
        self._health: tuple[float, dict[str, Health]] | None = None

    def down(self, name: str) -> bool:
        """Whether the latest probe of the service ``name`` found it down."""
        now = self.clock()
        if self._health is None or now - self._health[0] > self.ttl:
            self._health = (now, self.store.health())
        health = self._health[1].get(name)
        return health is not None and health.status == DOWN

    def of(self, plan: Plan) -> dict[str, Service]:
        """The services the plan's steps call, and the contracts of the workflows and the fleets' tasks they run, by
        their key."""
        found = {}
        for name in plan.workflow.service_names:
            service = self.get(name)
            if service is not None:
                found[name] = service
        for name, version in plan.workflow.children:
            key = contract_key(name, version)
            child = self._cached(key, functools.partial(self._child, name, version))
            if child is not None:
                found[key] = child
        for fleet_name, task_name in plan.workflow.fleet_tasks:
            key = fleet_kind.contract_key(fleet_name, task_name)
            task = self._cached(key, functools.partial(self._fleet_task, fleet_name, task_name))
            if task is not None:
                found[key] = task
        return found

    def _fleet_task(self, fleet_name: str, task_name: str) -> Service | None:
        """The contract of the task ``task_name`` of the fleet ``fleet_name``; None if either is gone."""
        if self.fleets is None:
            return None
        try:
            fleet = self.fleets.get_fleet(fleet_name)
        except NotFound:
            return None
        task = fleet.task(task_name)
        return fleet_kind.contract(fleet, task) if task is not None else None

    def _child(self, name: str, version: int | None) -> Service | None:
        """The contract of workflow ``name`` at ``version`` (None: its current one); None if it is gone."""
        try:
            workflow = self.store.get_workflow(name)
            if version is not None and workflow.id is not None:
                workflow = self.store.get_workflow_version(workflow.id, version)
        except NotFound:
            return None
        return contract(workflow, contract_key(name, version))

    def get(self, name: str) -> Service | None:
        return self._cached(name, lambda: self._service(name))

    def _service(self, name: str) -> Service | None:
        try:
            return self.store.get_service(name)
        except NotFound:
            return None

    def _cached(self, key: str, load: Callable[[], Service | None]) -> Service | None:
        now = self.clock()
        hit = self._cache.get(key)
        if hit is None or now - hit[0] > self.ttl:
            hit = self._cache[key] = (now, load())
        return hit[1]
