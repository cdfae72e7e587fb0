"""The kinds of step: one module each, and the table that finds a step's kind by name.

A new kind is a module with a :class:`StepKind` subclass, and one line here.
"""

from __future__ import annotations

from collections.abc import Mapping

from machinery.engine.kinds.base import StepKind
from machinery.engine.kinds.delay import DelayKind
from machinery.engine.kinds.ends import FailKind, SucceedKind
from machinery.engine.kinds.fleet import FleetKind
from machinery.engine.kinds.map import MapKind
from machinery.engine.kinds.service import ServiceKind
from machinery.engine.kinds.switch import SwitchKind
from machinery.engine.kinds.transform import TransformKind
from machinery.engine.kinds.wait import WaitKind
from machinery.engine.kinds.workflow import WorkflowKind

KINDS: Mapping[str, StepKind] = {
    kind.name: kind
    for kind in (
        ServiceKind(),
        SwitchKind(),
        DelayKind(),
        WaitKind(),
        TransformKind(),
        MapKind(),
        WorkflowKind(),
        FleetKind(),
        FailKind(),
        SucceedKind(),
    )
}
"""Every kind of step, by the name a definition gives in ``kind``."""

__all__ = ["KINDS", "StepKind"]
