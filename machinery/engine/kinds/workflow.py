"""``workflow``: run another registered workflow as a child event, and take its outputs.

Its inputs are mapped onto the child workflow's inputs as a service step's are onto its service's, and its
outputs are the child workflow's declared outputs (renamed by ``output``). To the checker and to the worker
claiming the step, the child workflow is a contract like a service's (:func:`contract`), found among the
services under :func:`contract_key`. The worker that claims the step starts the child event, and the step
waits for it; once the child has ended, its outcome is handed back (:mod:`machinery.engine.children`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from machinery.engine.kinds.service import ServiceKind
from machinery.engine.model import Field, HttpEndpoint, Service, Step, Workflow
from machinery.engine.retry import RetryPolicy
from machinery.engine.state import WAITING, Event, StepState
from machinery.engine.units import retry_unit

if TYPE_CHECKING:
    from machinery.engine.plan import Plan

CHILD = "workflow"
"""The kind of a child workflow's contract (``Service.kind``): starting it is no service call."""
START_TIMEOUT = 10.0
"""Seconds a worker has to start a child event before its claim lapses and another worker tries."""


def contract_key(name: str, version: int | None) -> str:
    """Where the contract of workflow ``name`` (pinned to ``version``, or its current one) is among the services;
    a service's name holds no ':', so it never clashes with one."""
    return f"workflow:{name}" if version is None else f"workflow:{name}@{version}"


def contract(workflow: Workflow, key: str) -> Service:
    """A workflow as the steps running it see it: its inputs and outputs, and its id and version to start."""
    return Service(
        name=key,
        endpoint=HttpEndpoint(key, kind=CHILD),
        inputs=workflow.inputs,
        outputs=workflow.outputs,
        description=workflow.description,
        timeout=START_TIMEOUT,
        retry=RetryPolicy(attempts=3),
        id=workflow.id,
        revision=workflow.version,
    )


class WorkflowKind(ServiceKind):
    name = "workflow"

    def callee_field(self, step: Step) -> str:
        return "workflow"

    def callee(self, step: Step) -> str | None:
        return contract_key(step.workflow or "", step.version)

    def callee_label(self, step: Step) -> str:
        return f"workflow '{step.workflow}'" + (f" version {step.version}" if step.version is not None else "")

    def writes(self, step: Step, services: Mapping[str, Service]) -> tuple[Field, ...]:
        child = services.get(self.callee(step) or "")
        return child.outputs if child is not None else ()

    def wake(self, plan: Plan, event: Event, step: Step, state: StepState, now: float) -> None:
        """Nothing: the step is moved on by its child event's end, never by a timer."""

    def retry(self, plan: Plan, event: Event, step: Step, now: float) -> None:
        """Wait again for the child the step started (which the caller retries), or start one if it has none."""
        state = event.own(step.id)
        if state.child is None:
            retry_unit(state, now)
            return
        state.status = WAITING
        state.error = None
        state.ended_at = None
        state.run_at = None
