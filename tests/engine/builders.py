"""Builders the engine tests share: types, fields, services, steps of every kind, workflows, references and a driver.

Everything here is plain data built with the engine's model classes: no network, no files, no database. Expressions
are compiled by the CEL adapter (``machinery.cel``), which is pure computation like the engine.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from machinery.cel import CelExpressions
from machinery.engine import dataflow, decider
from machinery.engine.calls import Call, CallFailure, ErrorKind
from machinery.engine.checker import check_workflow
from machinery.engine.errors import Problem
from machinery.engine.model import (
    DELAY,
    FAIL,
    MAP,
    SUCCEED,
    SWITCH,
    TRANSFORM,
    WAIT,
    WORKFLOW,
    Field,
    HttpEndpoint,
    Ref,
    Service,
    Step,
    Workflow,
    linear_steps,
)
from machinery.engine.plan import Plan, Settings
from machinery.engine.retry import RetryPolicy
from machinery.engine.state import Event, Item, StepStatus
from machinery.engine.types import FieldType
from machinery.engine.units import parse_unit

EXPRESSIONS = CelExpressions()
"""The expression language the tests compile switches and transforms with."""

# Types and fields


def ftype(text: str) -> FieldType:
    """A type as users write it in messages: ``int``, ``array``, ``array<int>``."""
    if text.startswith("array<") and text.endswith(">"):
        return FieldType("array", ftype(text[len("array<") : -1]))
    return FieldType(text)


def fld(spec: str, **options: Any) -> Field:
    """A field from ``"name:type"``; ``options`` are the other Field arguments (required, default, ...)."""
    name, _, type_text = spec.partition(":")
    return Field(name, ftype(type_text), **options)


def fields(specs: Iterable[Field | str]) -> tuple[Field, ...]:
    return tuple(s if isinstance(s, Field) else fld(s) for s in specs)


# Services and workflows

NO_RETRY_JITTER = RetryPolicy(attempts=3, backoff=1.0, multiplier=2.0, max_delay=30.0, jitter=False)
"""Three calls at most, waiting 1 s then 2 s: easy to assert on."""


def service(
    name: str,
    inputs: Iterable[Field | str] = (),
    outputs: Iterable[Field | str] = (),
    *,
    retry: RetryPolicy = NO_RETRY_JITTER,
    timeout: float = 10.0,
    **options: Any,
) -> Service:
    """A service at an address nobody answers; ``options`` are any other fields of :class:`Service`."""
    return Service(
        name=name,
        endpoint=HttpEndpoint(f"http://{name}.invalid/event"),
        inputs=fields(inputs),
        outputs=fields(outputs),
        timeout=timeout,
        retry=retry,
        **options,
    )


def registry(*services: Service) -> dict[str, Service]:
    return {s.name: s for s in services}


def step(
    step_id: str,
    service_name: str | None = None,
    *,
    after: Iterable[str] = (),
    input: Mapping[str, Ref] | None = None,
    output: Mapping[str, str] | None = None,
) -> Step:
    """A graph step; its service defaults to its id."""
    return Step(
        id=step_id,
        service=service_name or step_id,
        after=tuple(after),
        input=dict(input or {}),
        output=dict(output or {}),
    )


def _ids(ids: Iterable[str] | str) -> tuple[str, ...]:
    return (ids,) if isinstance(ids, str) else tuple(ids)


def switch(
    step_id: str,
    expression: str,
    cases: Mapping[str, Iterable[str] | str] | None = None,
    *,
    default: Iterable[str] | str = (),
    after: Iterable[str] = (),
) -> Step:
    """A switch: ``expression`` picks the route among ``cases`` (value -> step ids), else ``default``."""
    return Step(
        id=step_id,
        kind=SWITCH,
        expression=expression,
        cases={value: _ids(ids) for value, ids in (cases or {}).items()},
        default=_ids(default),
        after=tuple(after),
    )


def delay(step_id: str, seconds: float | None = None, *, until: Ref | None = None, after: Iterable[str] = ()) -> Step:
    return Step(id=step_id, kind=DELAY, seconds=seconds, until=until, after=tuple(after))


def wait(
    step_id: str,
    signal: str,
    outputs: Iterable[Field | str] = (),
    *,
    timeout: float | None = None,
    on_timeout: Iterable[str] | str = (),
    after: Iterable[str] = (),
    output: Mapping[str, str] | None = None,
) -> Step:
    """A wait for the signal ``signal``, whose body gives ``outputs``; after ``timeout`` s it takes ``on_timeout``."""
    return Step(
        id=step_id,
        kind=WAIT,
        signal=signal,
        outputs=fields(outputs),
        timeout=timeout,
        on_timeout=_ids(on_timeout),
        after=tuple(after),
        output=dict(output or {}),
    )


def transform(
    step_id: str,
    compute: Mapping[str, str],
    outputs: Iterable[Field | str],
    *,
    after: Iterable[str] = (),
    output: Mapping[str, str] | None = None,
) -> Step:
    """A transform: ``compute`` maps each of its ``outputs`` to an expression."""
    return Step(
        id=step_id,
        kind=TRANSFORM,
        compute=dict(compute),
        outputs=fields(outputs),
        after=tuple(after),
        output=dict(output or {}),
    )


def map_step(
    step_id: str,
    service_name: str,
    items: Ref,
    item: str,
    *,
    concurrency: int = 10,
    after: Iterable[str] = (),
    input: Mapping[str, Ref] | None = None,
    output: Mapping[str, str] | None = None,
    results: str = "keep",
) -> Step:
    """A map: calls ``service_name`` once per element of ``items``, passed as its input ``item``."""
    return Step(
        id=step_id,
        kind=MAP,
        service=service_name,
        items=items,
        item=item,
        concurrency=concurrency,
        after=tuple(after),
        input=dict(input or {}),
        output=dict(output or {}),
        results=results,
    )


def child(
    step_id: str,
    workflow_name: str,
    *,
    version: int | None = None,
    after: Iterable[str] = (),
    input: Mapping[str, Ref] | None = None,
    output: Mapping[str, str] | None = None,
) -> Step:
    """A ``workflow`` step: runs the workflow ``workflow_name`` (pinned to ``version``) as a child event."""
    return Step(
        id=step_id,
        kind=WORKFLOW,
        workflow=workflow_name,
        version=version,
        after=tuple(after),
        input=dict(input or {}),
        output=dict(output or {}),
    )


def fail(step_id: str, message: str = "", *, after: Iterable[str] = ()) -> Step:
    return Step(id=step_id, kind=FAIL, message=message, after=tuple(after))


def succeed(step_id: str, message: str = "", *, after: Iterable[str] = ()) -> Step:
    return Step(id=step_id, kind=SUCCEED, message=message, after=tuple(after))


def graph(
    steps: Iterable[Step], inputs: Iterable[Field | str] = (), outputs: Iterable[Field | str] = (), name: str = "graph"
) -> Workflow:
    return Workflow(name=name, steps=tuple(steps), inputs=fields(inputs), outputs=fields(outputs))


def chain(
    services: list[str], inputs: Iterable[Field | str] = (), outputs: Iterable[Field | str] = (), name: str = "chain"
) -> Workflow:
    """A workflow in the seed's linear form."""
    return Workflow(
        name=name, steps=linear_steps(services), inputs=fields(inputs), outputs=fields(outputs), linear=True
    )


# References a step input can be mapped to


def from_input(name: str) -> Ref:
    """``$.input.<name>``"""
    return Ref("input", (name,))


def from_context(*path: str) -> Ref:
    """``$.context.<path>``"""
    return Ref("context", path)


def from_step(step_id: str, *path: str) -> Ref:
    """``$.steps.<step_id>.<path>``"""
    return Ref("step", path, step=step_id)


def const(value: Any) -> Ref:
    return Ref("const", value=value)


def check(workflow: Workflow, services: Mapping[str, Service]) -> list[Problem]:
    """The static check, with the tests' expression language."""
    return check_workflow(workflow, services, EXPRESSIONS)


# The seed's example: three text services chained into "process-text"


def seed_services(space_counter_output: str = "message:string") -> dict[str, Service]:
    """The seed's services; as shipped, space-counter declares its output as ``message: string``."""
    return registry(
        service("upper", ["message:string"], ["message:string"]),
        service("reverse", ["message:string"], ["message:string"]),
        service("space-counter", ["message:string"], [space_counter_output]),
    )


def seed_workflow() -> Workflow:
    return chain(
        ["upper", "reverse", "space-counter"],
        inputs=["message:string"],
        outputs=["message:string", "space_count:int"],
        name="process-text",
    )


def corrected_seed_services() -> dict[str, Service]:
    """The seed's services with space-counter declaring what it really answers: ``space_count: int``."""
    return seed_services(space_counter_output="space_count:int")


# Driving the decider


SETTINGS = Settings(lease_grace=5.0, stale_after=30.0, max_lost=2)
"""A claim lasts the service's timeout + 5 s; a ready step is stale after 30 s; two losses are survived."""


@dataclass
class Driver:
    """Calls the decider's transitions for one workflow, the way the runtime does, with fewer arguments.

    Tokens are ``t1``, ``t2``, ... in claim order unless one is given.
    """

    workflow: Workflow
    services: dict[str, Service]
    settings: Settings = SETTINGS
    event_id: str = "ev-1"
    plan: Plan = field(init=False)
    _tokens: Iterator[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.plan = Plan.of(self.workflow, EXPRESSIONS)
        self._tokens = itertools.count(1)

    def accept(self, data: Mapping[str, Any], now: float = 100.0, **options: Any) -> Event:
        """Accept an event, then run what the API leaves for a worker to evaluate, as a worker would at once."""
        event = decider.accept(
            self.plan, data, event_id=options.pop("event_id", self.event_id), now=now, settings=self.settings, **options
        )
        return self.evaluated(event, now)

    def evaluated(self, event: Event, now: float) -> Event:
        """``event`` once a worker has run the ready steps that evaluate expressions (switches, transforms)."""
        while deferred := [u for u in decider.ready_units(event) if self.plan.kinds[parse_unit(u)[0]].evaluates]:
            claimed = self.claim(event, deferred[0], now)
            assert claimed is not None and claimed[1] is None, f"{deferred[0]!r} could not be run"
            event = claimed[0]
        return event

    def claim(
        self, event: Event, step_id: str, now: float, token: str | None = None
    ) -> tuple[Event, Call | None] | None:
        token = token or f"t{next(self._tokens)}"
        return decider.claim(self.plan, self.services, event, step_id, now=now, token=token, settings=self.settings)

    def call(self, event: Event, step_id: str, now: float) -> tuple[Event, Call]:
        """Claim ``step_id``, which must give a call."""
        claimed = self.claim(event, step_id, now)
        assert claimed is not None, f"step {step_id!r} could not be claimed at {now}"
        event, call = claimed
        assert call is not None, f"claiming step {step_id!r} gave no call: {event.steps[step_id].error}"
        return event, call

    def finish(
        self,
        event: Event,
        call: Call,
        now: float,
        *,
        outputs: Any = None,
        error: CallFailure | None = None,
        random: float = 0.0,
    ) -> Event | None:
        return decider.finish(
            self.plan, event, call, outputs=outputs, error=error, now=now, random=random, settings=self.settings
        )

    def done(self, event: Event, call: Call, now: float, **options: Any) -> Event:
        """Finish ``call``, which must change the event."""
        finished = self.finish(event, call, now, **options)
        assert finished is not None, f"the result of step {call.step_id!r} was refused"
        return finished

    def run(self, event: Event, step_id: str, outputs: Any, now: float) -> Event:
        """Claim ``step_id`` and finish it with ``outputs`` one second later."""
        event, call = self.call(event, step_id, now)
        return self.done(event, call, now + 1, outputs=outputs)

    def wake(self, event: Event, unit: str, now: float) -> Event:
        """Claim a delay or a wait whose time has come: the engine completes it itself, with no call."""
        claimed = self.claim(event, unit, now)
        assert claimed is not None, f"unit {unit!r} could not be claimed at {now}"
        event, call = claimed
        assert call is None, f"claiming unit {unit!r} gave a call"
        return event

    def signal(self, event: Event, name: str, payload: Any, now: float) -> Event:
        return self.evaluated(decider.signal(self.plan, event, name, payload, now=now, settings=self.settings), now)

    def cancel(self, event: Event, now: float) -> Event:
        return decider.cancel(self.plan, event, now, self.settings)

    def retry(self, event: Event, now: float) -> Event:
        return self.evaluated(decider.retry(self.plan, event, now, self.settings), now)

    def pause(self, event: Event, now: float) -> Event:
        return decider.pause(event, now)

    def resume(self, event: Event, now: float) -> Event:
        return decider.resume(self.plan, event, now, self.settings)

    def context(self, event: Event) -> dict[str, Any]:
        return dataflow.context(self.plan, event)


def statuses(event: Event) -> dict[str, str]:
    """The status of each step of ``event``, by step id."""
    return {step_id: state.status.value for step_id, state in event.steps.items()}


@dataclass
class Lanes:
    """The items of one map step, held in memory as a store holds them, and moved on as the runtime moves them:
    claimed, finished, their lane handed on, the step completed once every item has."""

    driver: Driver
    items: dict[int, Item]

    @classmethod
    def fan_out(cls, driver: Driver, event: Event, step_id: str, now: float) -> tuple[Event, Lanes]:
        """Claim the map step ``step_id``, which fans it out."""
        claimed = driver.claim(event, step_id, now)
        assert claimed is not None and claimed[1] is None, f"map step {step_id!r} did not fan out"
        event = claimed[0]
        return event, cls(driver, {item.index: item for item in event.spawned})

    def statuses(self) -> list[str]:
        return [self.items[i].state.status.value for i in sorted(self.items)]

    def claim(self, event: Event, index: int, now: float) -> Call | None:
        claimed = decider.claim_item(
            self.driver.plan,
            self.driver.services,
            event.status,
            self.items[index],
            now=now,
            token=f"i{index}-{now}",
            settings=self.driver.settings,
        )
        if claimed is None:
            return None
        self.items[index], call = claimed
        return call

    def finish(self, event: Event, call: Call, now: float, **options: Any) -> Event:
        """Record ``call``'s result in its item, then what follows it: the event as it then is."""
        assert call.item is not None
        finished = decider.finish_item(
            self.items[call.item],
            call,
            status=event.status,
            now=now,
            random=0.0,
            settings=self.driver.settings,
            **options,
        )
        assert finished is not None, f"the result of item {call.item} was refused"
        self.items[call.item] = finished
        return self.after(event, finished, now)

    def after(self, event: Event, item: Item, now: float) -> Event:
        plan, settings = self.driver.plan, self.driver.settings
        if item.state.status is StepStatus.FAILED:
            return decider.item_failed(plan, event, item, now, settings) or event
        if item.state.status is not StepStatus.COMPLETED:
            return event
        if item.successor is not None:
            released = decider.release(self.items[item.successor], now, settings)
            if released is not None:
                self.items[item.successor] = released
            self.items[item.index] = decider.handed_on(item, settings) or item
            return event
        if any(other.state.status is not StepStatus.COMPLETED for other in self.items.values()):
            return event
        results = [self.items[i].state.outputs for i in sorted(self.items)]
        outputs = {} if plan.graph.steps[item.step_id].results == "discard" else {"results": results}
        return decider.items_completed(plan, event, item.step_id, outputs, None, now, settings) or event

    def run(self, event: Event, index: int, outputs: Any, now: float) -> Event:
        """Claim item ``index`` and finish it with ``outputs``."""
        call = self.claim(event, index, now)
        assert call is not None, f"item {index} could not be claimed at {now}"
        return self.finish(event, call, now, outputs=outputs)


TRANSIENT = CallFailure("connection refused", transient=True, kind=ErrorKind.CONNECTION)
PERMANENT = CallFailure("HTTP 400: bad request", transient=False, kind=ErrorKind.HTTP)


def diamond_services() -> dict[str, Service]:
    return registry(
        *corrected_seed_services().values(),
        service("join", ["reversed:string", "space_count:int"], ["summary:string"]),
    )


def diamond_workflow() -> Workflow:
    """``upper`` first; ``reverse`` and ``space-counter`` after it in parallel; ``join`` after both.

    ``reverse`` writes its message into the context as ``reversed``.
    """
    return graph(
        [
            step("upper"),
            step("reverse", after=["upper"], output={"message": "reversed"}),
            step("space-counter", after=["upper"]),
            step("join", after=["reverse", "space-counter"]),
        ],
        inputs=["message:string"],
        outputs=["summary:string", "reversed:string", "space_count:int"],
        name="diamond",
    )
