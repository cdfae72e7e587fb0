"""The interface every kind of step implements, for the checker and for the decider.

A kind knows what its steps add to the context and how to check them when a
workflow is registered, and what its steps do when an event reaches them. The
checker and the decider never ask which kind a step is: they ask its kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from machinery.engine.errors import Problem
from machinery.engine.model import Field, Service, Step
from machinery.engine.scope import Definitions, Scope
from machinery.engine.state import PENDING, Event, Item, StepState
from machinery.engine.units import complete

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from machinery.engine.calls import CallFailure
    from machinery.engine.fleets import Workload
    from machinery.engine.plan import Plan, Settings


class StepKind:
    """How one kind of step is checked and run; one subclass per kind, one instance in ``KINDS``."""

    name: ClassVar[str]
    calls_service: ClassVar[bool] = False
    """Whether its units are claimed by workers, to call its ``service``; the engine runs the other kinds itself."""
    writes_context: ClassVar[bool] = False
    """Whether its outputs go into the context (a switch's ``value`` does not)."""
    evaluates: ClassVar[bool] = False
    """Whether running it evaluates expressions: then only a worker runs it, never the API's thread."""
    fans_out: ClassVar[bool] = False
    """Whether a worker claiming it fans it out into items (:meth:`fan_out`) instead of calling its service."""

    def callee(self, step: Step) -> str | None:
        """For a kind that ``calls_service``: the key of the contract it calls among the services it is given."""
        return None

    def callee_label(self, step: Step) -> str:
        """What the step calls, for messages: ``service 'upper'``."""
        return f"service '{self.callee(step)}'"

    def callee_field(self, step: Step) -> str:
        """The step's field naming what it calls."""
        return "service"

    def writes(self, step: Step, services: Mapping[str, Service]) -> tuple[Field, ...]:
        """The fields ``step`` adds to the context (before ``output`` renames them), given the registered services."""
        return ()

    def check(self, step: Step, scope: Scope, definitions: Definitions) -> list[Problem]:
        """Every problem of ``step`` that its kind can see, ``scope`` being what it can read."""
        return []

    def start(self, plan: Plan, event: Event, step: Step, state: StepState, now: float) -> None:
        """The event has reached ``step``: run it, or make it ready or waiting."""
        state.started_at = now
        self.run(plan, event, step, state, now)

    def run(self, plan: Plan, event: Event, step: Step, state: StepState, now: float) -> None:
        """Run a step the engine runs itself: complete it, fail it, or leave it waiting."""
        raise NotImplementedError(f"steps of kind '{self.name}' are not run by the engine")

    def wake(self, plan: Plan, event: Event, step: Step, state: StepState, now: float) -> None:
        """A waiting step's time has come."""
        complete(state, None, now)

    def call_inputs(
        self, plan: Plan, event: Event, step: Step, service: Service
    ) -> tuple[dict[str, Any], list[Problem]]:
        """The inputs of a call of the step's service."""
        raise NotImplementedError(f"steps of kind '{self.name}' call no service")

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
        """The items a worker claiming the step fans it out into, the step running (or failed) meanwhile;
        ``members`` are the workloads a fleet step's selector matched."""
        raise NotImplementedError(f"steps of kind '{self.name}' have no items")

    def gather(
        self, step: Step, items: Iterable[Item], max_bytes: int
    ) -> tuple[dict[str, Any], str | None, CallFailure | None]:
        """Once every item of the step is over, its outputs from them, read in order; a note when some were left
        out (larger than ``max_bytes``), and the failure if the items' outcomes fail the step."""
        raise NotImplementedError(f"steps of kind '{self.name}' have no items")

    def retry(self, plan: Plan, event: Event, step: Step, now: float) -> None:
        """Make the failed ``step`` of a retried event run again."""
        state = event.own(step.id)
        state.status = PENDING
        state.error = None
