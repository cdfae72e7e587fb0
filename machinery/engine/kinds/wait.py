"""``wait``: wait for the signal ``signal``, whose body becomes the step's ``outputs``.

After ``timeout`` seconds it takes the route ``on_timeout`` instead of its
dependents, or fails if it has none. A signal that came before the step was
reached is kept for it by the event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from machinery.engine.calls import CallFailure, ErrorKind
from machinery.engine.graph import SIGNAL_ROUTE, TIMEOUT_ROUTE
from machinery.engine.kinds.base import StepKind
from machinery.engine.model import Field, Service, Step
from machinery.engine.state import WAITING, Event, StepState
from machinery.engine.units import complete, fail_step

if TYPE_CHECKING:
    from machinery.engine.plan import Plan


class WaitKind(StepKind):
    name = "wait"
    writes_context = True

    def writes(self, step: Step, services: Mapping[str, Service]) -> tuple[Field, ...]:
        return step.outputs

    def run(self, plan: Plan, event: Event, step: Step, state: StepState, now: float) -> None:
        for i, received in enumerate(event.signals):
            if received["name"] == step.signal:
                event.signals = event.signals[:i] + event.signals[i + 1 :]
                complete(state, received["payload"], now)
                state.route = SIGNAL_ROUTE
                return
        state.status = WAITING
        state.run_at = now + step.timeout if step.timeout is not None else None

    def wake(self, plan: Plan, event: Event, step: Step, state: StepState, now: float) -> None:
        if not step.on_timeout:
            error = CallFailure(
                f"no signal '{step.signal}' arrived within {step.timeout:g} s", False, ErrorKind.TIMEOUT
            )
            fail_step(event, step.id, error, now)
            return
        complete(state, None, now)
        state.route = TIMEOUT_ROUTE
