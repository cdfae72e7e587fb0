"""Ad hoc runs of a fleet's task (``POST /fleets/<name>/tasks``): events like any other, to follow and retry.

Each task has a workflow of its own, which machinery registers the first time the task is run ad hoc, and again
whenever the fleet changed it since: one ``fleet`` step running the task on the workloads the event's
``selector`` chooses, at most the task's ``concurrency`` at once. Its inputs are the task's and ``selector``; its
outputs are the step's. It is named ``<fleet>:<task>``, a name no user can give (it holds a ':').
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from machinery.engine.errors import Conflict, InvalidData, NotFound, Problem
from machinery.engine.fleets import Fleet, FleetTask
from machinery.engine.kinds.fleet import OUTPUTS, adhoc_name
from machinery.engine.model import FLEET, Field, Ref, Step, Workflow
from machinery.engine.ports import FleetStore
from machinery.engine.state import Event
from machinery.engine.types import FieldType
from machinery.registry import Registry
from machinery.runtime import Events

SELECTOR = "selector"
STEP = "run"
ATTEMPTS = 3
"""Tries at registering the task's workflow when other requests register it at the same time."""


def adhoc_workflow(fleet: Fleet, task: FleetTask) -> Workflow:
    """The workflow of the ad hoc runs of ``task`` of ``fleet``."""
    step = Step(
        id=STEP,
        kind=FLEET,
        fleet=fleet.name,
        task=task.name,
        selector=Ref("input", (SELECTOR,)),
        input={f.name: Ref("input", (f.name,)) for f in task.inputs},
        concurrency=task.concurrency,
    )
    selector = Field(SELECTOR, FieldType("object"), "Labels every workload chosen has", required=False, default={})
    return Workflow(
        name=adhoc_name(fleet.name, task.name),
        steps=(step,),
        inputs=(*task.inputs, selector),
        outputs=OUTPUTS,
        description=f"Ad hoc runs of task '{task.name}' of fleet '{fleet.name}'",
    )


class AdHoc:
    """Runs a fleet's task on the workloads a selector chooses, as an event of the task's own workflow."""

    def __init__(self, fleets: FleetStore, registry: Registry, events: Events) -> None:
        self.fleets = fleets
        self.registry = registry
        self.events = events

    def run(
        self,
        fleet_name: str,
        task_name: str,
        args: Mapping[str, Any],
        selector: Mapping[str, str],
        idempotency_key: str | None = None,
    ) -> tuple[Event, bool]:
        """The event running the task, and whether it is new (not one sent before with ``idempotency_key``);
        InvalidData naming each argument that does not fit the task's inputs."""
        fleet = self.fleets.get_fleet(fleet_name)
        task = fleet.task(task_name)
        if task is None:
            raise NotFound(f"fleet '{fleet_name}' has no task '{task_name}'")
        if SELECTOR in {f.name for f in task.inputs}:
            problem = Problem(f"an argument named '{SELECTOR}' is the selector's name here", field=SELECTOR)
            raise InvalidData(f"task '{task_name}' can be run from a workflow's fleet step only", [problem])
        if SELECTOR in args:
            problem = Problem(f"give the labels as the request's '{SELECTOR}', not among its arguments", field=SELECTOR)
            raise InvalidData(f"task '{task_name}' takes no argument '{SELECTOR}'", [problem])
        name = self._register(fleet, task)
        return self.events.submit(name, {**args, SELECTOR: dict(selector)}, idempotency_key)

    def _register(self, fleet: Fleet, task: FleetTask) -> str:
        """Register the task's workflow, or bring it up to date with the task; its name."""
        wanted = adhoc_workflow(fleet, task)
        for _ in range(ATTEMPTS):
            try:
                current = self.registry.get_workflow(wanted.name)
            except NotFound:
                try:
                    self.registry.add_workflow(wanted)
                except Conflict:
                    continue  # registered meanwhile by another request: compared on the next turn
                return wanted.name
            if replace(current, id=None, version=wanted.version) == wanted:
                return wanted.name
            try:
                self.registry.replace_workflow(wanted.name, wanted)
            except Conflict:
                continue
            return wanted.name
        raise Conflict(f"the workflow of task '{task.name}' kept changing while it was registered; try again")
