"""``fleet``: run one of a fleet's tasks on every workload whose labels match a selector.

To the checker and to the workers, a fleet's task is a contract like a service's (:func:`contract`), found
among the services under :func:`contract_key`. A worker claiming the step is given the workloads the selector
matches, and fans the step out into one item per workload (:mod:`machinery.engine.fanout`): the workloads
that are up run the task in the step's ``concurrency`` lanes, each on the host that holds it; the others are
skipped at once, saying why. An item that fails, once the task's retry policy is spent, is over all the same:
once every item is over, the step's outputs are the results by workload and the lists of the workloads
skipped and failed, unless more failed than ``max_failed`` allows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from machinery.engine.calls import CallFailure, ErrorKind
from machinery.engine.dataflow import call_inputs, contract_failure, lookup, step_context
from machinery.engine.errors import Problem
from machinery.engine.fleets import Fleet, FleetTask, Workload, WorkloadState
from machinery.engine.kinds.map import MapKind, too_large
from machinery.engine.kinds.service import ServiceKind
from machinery.engine.model import Field, HttpEndpoint, Ref, Service, Step
from machinery.engine.scope import Definitions, Scope, check_flow
from machinery.engine.state import COMPLETED, FAILED, SKIPPED, Event, Item, StepState
from machinery.engine.types import FieldType
from machinery.engine.units import complete, fail_step, fanned_out, make_ready

if TYPE_CHECKING:
    from machinery.engine.plan import Plan, Settings

TASK = "fleet"
"""The kind of a fleet task's contract (``Service.kind``): the hosts holding the workloads run it."""

RESULTS = Field("results", FieldType("object"), "Each workload's results, by its name")
SKIPPED_FIELD = Field(
    "skipped", FieldType("array", FieldType("object")), "The workloads not up, each as {workload, reason}"
)
FAILED_FIELD = Field(
    "failed", FieldType("array", FieldType("object")), "The workloads the task failed on, each as {workload, error}"
)
OUTPUTS = (RESULTS, SKIPPED_FIELD, FAILED_FIELD)
SELECTOR = Field("selector", FieldType("object"))


def contract_key(fleet: str, task: str) -> str:
    """Where the contract of ``task`` of ``fleet`` is among the services; a service's name holds no ':'."""
    return f"fleet:{fleet}/{task}"


def adhoc_name(fleet: str, task: str) -> str:
    """The name of the workflow machinery keeps for the ad hoc runs of ``task``: it holds a ':', which no name a
    user gives does."""
    return f"{fleet}:{task}"


def is_adhoc(workflow: str, fleet: str) -> bool:
    """Whether ``workflow`` is one machinery keeps for the ad hoc runs of a task of ``fleet``."""
    return workflow.startswith(f"{fleet}:")


def parse_key(key: str) -> tuple[str, str]:
    """The fleet's name and the task's of a contract's key."""
    fleet, _, task = key.removeprefix("fleet:").partition("/")
    return fleet, task


def contract(fleet: Fleet, task: FleetTask) -> Service:
    """A fleet's task as the steps running it see it: its typed arguments and results, and how it is called."""
    key = contract_key(fleet.name, task.name)
    return Service(
        name=key,
        endpoint=HttpEndpoint(key, kind=TASK),
        inputs=task.inputs,
        outputs=task.outputs,
        description=task.description,
        timeout=task.timeout,
        retry=task.retry,
        idempotent=task.idempotent,
    )


def selector(plan: Plan, event: Event, step: Step) -> dict[str, str] | None:
    """The labels the step's workloads must have, as the event gives them now; None if they are not an object
    of strings (the step fails when it fans out)."""
    if not isinstance(step.selector, Ref):
        return dict(step.selector)
    present, value = lookup(step.selector, event, step_context(plan, event, step))
    if not present or not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        return None
    return value


class FleetKind(MapKind):
    name = "fleet"

    def callee(self, step: Step) -> str | None:
        return contract_key(step.fleet or "", step.task or "")

    def callee_label(self, step: Step) -> str:
        return f"task '{step.task}' of fleet '{step.fleet}'"

    def callee_field(self, step: Step) -> str:
        return "task"

    def writes(self, step: Step, services: Mapping[str, Service]) -> tuple[Field, ...]:
        return OUTPUTS

    def check(self, step: Step, scope: Scope, definitions: Definitions) -> list[Problem]:
        problems = ServiceKind.check(self, step, scope, definitions)
        if isinstance(step.selector, Ref):
            problems += check_flow(SELECTOR, step.selector, scope, f"fleet step '{step.id}' selector", step.id)
        return problems

    def fan_out(
        self,
        plan: Plan,
        event: Event,
        step: Step,
        state: StepState,
        service: Service,
        now: float,
        settings: Settings,
        members: Sequence[Workload] = (),
    ) -> list[Item]:
        if selector(plan, event, step) is None:
            message = (
                f"fleet step '{step.id}' needs an object of labels (strings) as its selector, from {step.selector}"
            )
            self._fail(event, step, message, now)
            return []
        if len(members) > settings.max_map_items:
            message = (
                f"fleet step '{step.id}' matches more than the {settings.max_map_items} workloads allowed "
                "(MACHINERY_MAX_MAP_ITEMS)"
            )
            self._fail(event, step, message, now, ErrorKind.SIZE)
            return []
        args, problems = call_inputs(plan, event, step, service)
        if problems:
            what = f"step '{step.id}' cannot run {self.callee_label(step)}: "
            fail_step(event, step.id, contract_failure(what, problems, ErrorKind.INPUT), now)
            return []
        up = [w for w in members if w.state is WorkloadState.UP and w.host is not None]
        down = [w for w in members if w.state is not WorkloadState.UP or w.host is None]
        fanned_out(state, len(members), now)
        items = []
        for index, (workload, successor, first) in enumerate(lanes(up, step.concurrency)):
            item = Item(
                event.id,
                step.id,
                index,
                event.workflow_id,
                event.workflow_version,
                args,
                successor=successor,
                key=workload.name,
            )
            if first:
                make_ready(item.state, now)
            items.append(item)
        for index, workload in enumerate(down, start=len(up)):
            item = Item(event.id, step.id, index, event.workflow_id, event.workflow_version, {}, key=workload.name)
            item.state.status = SKIPPED
            item.state.ended_at = now
            item.state.note = _why_skipped(workload)
            items.append(item)
        if not up:
            outputs, state.note, _ = self.gather(step, items, settings.max_map_results)
            complete(state, outputs, now)
        return items

    def gather(
        self, step: Step, items: Iterable[Item], max_bytes: int
    ) -> tuple[dict[str, Any], str | None, CallFailure | None]:
        """The step's outputs once every item is over: the results by workload (left out, as the note says, if
        larger than ``max_bytes``), the skipped and the failed; the failure if more failed than allowed."""
        results: dict[str, Any] = {}
        skipped, failed = [], []
        for item in items:
            status = item.state.status
            if status is COMPLETED:
                results[item.key or ""] = item.state.outputs or {}
            elif status is SKIPPED:
                skipped.append({"workload": item.key, "reason": item.state.note or ""})
            elif status is FAILED:
                failed.append({"workload": item.key, "error": (item.state.error or {}).get("message", "failed")})
        note = None
        if len(json.dumps(results)) > max_bytes:
            note, results = too_large(max_bytes), {}
        # By workload, whatever the order of the items (each host's together).
        results = dict(sorted(results.items()))
        skipped.sort(key=lambda entry: entry["workload"] or "")
        failed.sort(key=lambda entry: entry["workload"] or "")
        outputs = {RESULTS.name: results, SKIPPED_FIELD.name: skipped, FAILED_FIELD.name: failed}
        if step.max_failed is None or len(failed) <= step.max_failed:
            return outputs, note, None
        first = failed[0]
        message = (
            f"the task failed on {len(failed)} workloads, more than the {step.max_failed} allowed "
            f"(first {first['workload']}: {first['error']})"
        )
        return outputs, note, CallFailure(message, False, ErrorKind.ERROR, {"failed": len(failed)})


def lanes(up: Sequence[Workload], concurrency: int) -> list[tuple[Workload, int | None, bool]]:
    """The workloads in the order of their items, each with the index of the next item of its lane and whether it
    starts one. Each host's workloads run in lanes of their own, as many as its share of ``concurrency`` (one at
    least), so that a lane goes on on the host it is on rather than hopping from host to host; the hosts past
    ``concurrency`` have none, and their workloads end the other hosts' lanes."""
    by_host: dict[str, list[Workload]] = {}
    for workload in sorted(up, key=lambda w: (w.host or "", w.name)):
        by_host.setdefault(workload.host or "", []).append(workload)
    hosts = sorted(by_host, key=lambda host: (-len(by_host[host]), host))
    ordered: list[Workload] = []
    chains: list[list[int]] = []
    for host, share in zip(hosts, _shares(concurrency, [len(by_host[host]) for host in hosts]), strict=True):
        start = len(ordered)
        ordered += by_host[host]
        own = [[] for _ in range(share)] if share else chains
        for offset in range(len(by_host[host])):
            own[offset % len(own)].append(start + offset)
        if share:
            chains += own
    successors: dict[int, int] = {}
    for chain in chains:
        successors.update(zip(chain, chain[1:], strict=False))
    firsts = {chain[0] for chain in chains}
    return [(workload, successors.get(index), index in firsts) for index, workload in enumerate(ordered)]


def _shares(concurrency: int, counts: Sequence[int]) -> list[int]:
    """How many lanes each host gets of ``concurrency``, ``counts`` being its workloads (the largest first): one
    each while they last, the rest in proportion to the counts, never more than a host has workloads."""
    if not counts or len(counts) >= concurrency:
        return [1] * min(concurrency, len(counts)) + [0] * (len(counts) - concurrency)
    spare, total = concurrency - len(counts), sum(counts)
    extra = [spare * count // total for count in counts]
    for index in range(spare - sum(extra)):
        extra[index % len(counts)] += 1
    return [min(count, 1 + more) for count, more in zip(counts, extra, strict=True)]


def _why_skipped(workload: Workload) -> str:
    if workload.host is None and workload.state is WorkloadState.UP:
        return "not up: held by no host"
    return f"not up: {workload.state.value}" + (f" ({workload.message})" if workload.message else "")
