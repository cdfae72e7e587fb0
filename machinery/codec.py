"""The definition formats: services and workflows to plain JSON documents and back, in one place.

The API answers with these documents, ``machinery export`` writes them, the
stores persist them, and what :mod:`machinery.validation` accepts from users
is read with them, so what one writes the others read. Reading trusts its
document: validate what comes from outside first. A service's credentials are
written redacted unless asked for in clear, which only the stores and the
comparison of ``machinery apply`` do.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any

from machinery.engine.errors import InvalidDefinition
from machinery.engine.fleets import Fleet, FleetSettings, FleetTask, Lifecycle, LifecycleEvent, Workload, WorkloadState
from machinery.engine.model import (
    CALLBACK,
    DELAY,
    DISCARD,
    FAIL,
    FLEET,
    MAP,
    SERVICE,
    SUCCEED,
    SWITCH,
    TRANSFORM,
    WAIT,
    WORKFLOW,
    Argument,
    CommandTarget,
    Executable,
    Field,
    HeaderValue,
    HttpEndpoint,
    Parameter,
    Ref,
    SecretRef,
    Service,
    Step,
    Workflow,
    linear_steps,
    redact,
)
from machinery.engine.retry import RetryPolicy
from machinery.engine.types import FieldType

KIND_FIELDS = {
    SERVICE: {"service", "input", "output"},
    SWITCH: {"expression", "cases", "default"},
    DELAY: {"seconds", "until"},
    WAIT: {"signal", "timeout", "on_timeout", "outputs", "output"},
    TRANSFORM: {"compute", "outputs", "output"},
    MAP: {"service", "workflow", "version", "input", "output", "items", "item", "concurrency", "results"},
    WORKFLOW: {"workflow", "version", "input", "output"},
    FLEET: {"fleet", "task", "selector", "input", "output", "concurrency", "max_failed"},
    FAIL: {"message"},
    SUCCEED: {"message"},
}
"""The keys a step of each kind may have, besides ``id``, ``kind`` and ``after``."""

_PLAIN_SERVICE_FIELDS = (
    "description",
    "timeout",
    "concurrency",
    "healthcheck",
    "idempotent",
    "mode",
    "callback_timeout",
    "heartbeat",
    "id",
    "revision",
)
_PLAIN_STEP_FIELDS = (
    "service",
    "output",
    "expression",
    "seconds",
    "signal",
    "timeout",
    "compute",
    "item",
    "concurrency",
    "results",
    "message",
    "workflow",
    "version",
    "fleet",
    "task",
    "max_failed",
)
_REF = re.compile(r"^\$\.(input|context|steps)((?:\.[A-Za-z0-9_-]+)+)$")


def parse_ref(value: Any) -> Ref:
    """A step input: a ``$.`` reference, or any other JSON value as a constant."""
    if not (isinstance(value, str) and value.startswith("$")):
        return Ref("const", value=value)
    match = _REF.match(value)
    if not match:
        raise InvalidDefinition(
            f"{value!r} is no reference; write $.input.<field>, $.context.<field> or $.steps.<id>.<field>"
        )
    source, rest = match.group(1), tuple(match.group(2)[1:].split("."))
    if source == "steps":
        if len(rest) < 2:
            raise InvalidDefinition(f"{value!r} names a step but no field of its outputs")
        return Ref("step", rest[1:], step=rest[0])
    return Ref(source, rest)


def parse_header(value: Any) -> HeaderValue:
    """A header's value: a string, or ``{"secret": NAME}``; InvalidDefinition for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and list(value) == ["secret"] and isinstance(value["secret"], str):
        return SecretRef(value["secret"])
    raise InvalidDefinition('a header\'s value is a string or a secret reference, {"secret": "NAME"}')


def _header_to_json(value: HeaderValue) -> Any:
    return {"secret": value.name} if isinstance(value, SecretRef) else value


def field_to_dict(f: Field) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": f.name, "type": f.type.name, "description": f.description}
    if f.type.items is not None:
        doc["items"] = f.type.items.name
    if not f.required:
        doc["required"] = False
    if f.has_default:
        doc["default"] = f.default
    if f.searchable:
        doc["searchable"] = True
    return doc


def field_from_dict(doc: dict[str, Any]) -> Field:
    return Field(
        name=doc["name"],
        type=FieldType.parse(doc["type"], doc.get("items")),
        **{k: doc[k] for k in ("description", "required", "default", "searchable") if k in doc},
    )


def retry_to_dict(r: RetryPolicy) -> dict[str, Any]:
    return {
        "attempts": r.attempts,
        "backoff": r.backoff,
        "multiplier": r.multiplier,
        "max_delay": r.max_delay,
        "jitter": r.jitter,
    }


def service_to_dict(s: Service, *, in_clear: bool = False) -> dict[str, Any]:
    """A service document; the literal values of its credential headers redacted, unless ``in_clear``."""
    doc: dict[str, Any] = {"id": s.id, "revision": s.revision} if s.id else {}
    doc |= {"name": s.name, "kind": s.kind, "description": s.description}
    if isinstance(s.endpoint, CommandTarget):
        doc |= command_to_dict(s.endpoint) | {"idempotent": s.idempotent}
    else:
        headers = s.endpoint.headers if in_clear else redact(s.endpoint.headers)
        doc |= {
            "address": s.endpoint.address,
            "method": s.endpoint.method,
            "headers": {name: _header_to_json(value) for name, value in headers.items()},
        }
        if not s.idempotent:
            doc["idempotent"] = False
    return doc | {
        "timeout": s.timeout,
        "retry": retry_to_dict(s.retry),
        "concurrency": s.concurrency,
        "healthcheck": s.healthcheck,
        **_callback_to_dict(s),
        "inputs": [field_to_dict(f) for f in s.inputs],
        "outputs": [field_to_dict(f) for f in s.outputs],
    }


def _callback_to_dict(s: Service) -> dict[str, Any]:
    """How a callback service answers; nothing for a service that answers at once, as most do."""
    if s.mode != CALLBACK:
        return {}
    return {"mode": s.mode, "callback_timeout": s.callback_timeout, "heartbeat": s.heartbeat}


def command_to_dict(target: CommandTarget) -> dict[str, Any]:
    """The keys of a command service's document that say what it runs."""
    return {
        "executable": target.executable,
        "arguments": [
            {"flag": a.flag}
            | ({"value": a.value} if a.value is not None else {})
            | ({"input": a.input} if a.input is not None else {})
            for a in target.arguments
        ],
        "stdin": target.stdin,
        "stdout": target.stdout,
        "environment": dict(target.environment),
        "transient_exit_codes": list(target.transient_exit_codes),
    }


def service_from_dict(doc: dict[str, Any]) -> Service:
    """A service document, with its id and revision if it has them; a key left out takes its default."""
    endpoint: HttpEndpoint | CommandTarget
    if doc.get("kind") == "command":
        endpoint = CommandTarget(
            executable=doc["executable"],
            arguments=tuple(Argument(a["flag"], a.get("value"), a.get("input")) for a in doc.get("arguments", ())),
            stdin=doc.get("stdin"),
            environment=dict(doc.get("environment", {})),
            transient_exit_codes=tuple(doc.get("transient_exit_codes", ())),
            **{k: doc[k] for k in ("stdout",) if k in doc},
        )
    else:
        endpoint = HttpEndpoint(
            address=doc["address"],
            headers={name: parse_header(value) for name, value in doc.get("headers", {}).items()},
            **{k: doc[k] for k in ("method",) if k in doc},
        )
    return Service(
        name=doc["name"],
        endpoint=endpoint,
        inputs=tuple(field_from_dict(f) for f in doc.get("inputs", ())),
        outputs=tuple(field_from_dict(f) for f in doc.get("outputs", ())),
        retry=RetryPolicy(**doc.get("retry", {})),
        **{k: doc[k] for k in _PLAIN_SERVICE_FIELDS if k in doc},
    )


def parameter_to_dict(p: Parameter) -> dict[str, Any]:
    doc: dict[str, Any] = {"flag": p.flag, "description": p.description, "value": p.value}
    if p.choices:
        doc["choices"] = list(p.choices)
    return doc | {"requires_root": p.requires_root, "requires": list(p.requires), "conflicts": list(p.conflicts)}


def executable_to_dict(e: Executable) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": e.id, "revision": e.revision} if e.id else {}
    return doc | {
        "name": e.name,
        "version": e.version,
        "path": e.path,
        "description": e.description,
        "parameters": [parameter_to_dict(p) for p in e.parameters],
    }


def executable_from_dict(doc: dict[str, Any]) -> Executable:
    """An executable document, with its id and revision if it has them."""
    return Executable(
        name=doc["name"],
        path=doc["path"],
        parameters=tuple(
            Parameter(
                flag=p["flag"],
                choices=tuple(p.get("choices", ())),
                requires=tuple(p.get("requires", ())),
                conflicts=tuple(p.get("conflicts", ())),
                **{k: p[k] for k in ("description", "value", "requires_root") if k in p},
            )
            for p in doc.get("parameters", ())
        ),
        **{k: doc[k] for k in ("version", "description", "id", "revision") if k in doc},
    )


def step_to_dict(step: Step) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": step.id, "kind": step.kind, "after": list(step.after)}
    values: dict[str, Any] = {
        "service": step.service,
        "input": {k: _ref_to_json(v) for k, v in step.input.items()},
        "output": dict(step.output),
        "expression": step.expression,
        "cases": {k: list(v) for k, v in step.cases.items()},
        "default": list(step.default),
        "seconds": step.seconds,
        "until": _ref_to_json(step.until) if step.until is not None else None,
        "signal": step.signal,
        "timeout": step.timeout,
        "on_timeout": list(step.on_timeout),
        "outputs": [field_to_dict(f) for f in step.outputs],
        "compute": dict(step.compute),
        "items": str(step.items) if step.items is not None else None,
        "item": step.item,
        "concurrency": step.concurrency,
        "results": step.results if step.results == DISCARD else None,
        "message": step.message,
        "workflow": step.workflow,
        "version": step.version,
        "fleet": step.fleet,
        "task": step.task,
        "selector": str(step.selector) if isinstance(step.selector, Ref) else dict(step.selector),
        "max_failed": step.max_failed,
    }
    for name in sorted(KIND_FIELDS[step.kind], key=list(values).index):
        value = values[name]
        if value is not None and value != [] and value != {} and value != "":
            doc[name] = value
    return doc


def step_from_dict(doc: dict[str, Any]) -> Step:
    """A step document; InvalidDefinition if a reference in it is malformed."""
    return Step(
        id=doc["id"],
        kind=doc.get("kind", SERVICE),
        after=tuple(doc.get("after", ())),
        input={name: parse_ref(value) for name, value in doc.get("input", {}).items()},
        until=parse_ref(doc["until"]) if "until" in doc else None,
        items=parse_ref(doc["items"]) if "items" in doc else None,
        selector=parse_ref(doc["selector"]) if isinstance(doc.get("selector"), str) else doc.get("selector", {}),
        cases={k: tuple(v) for k, v in doc.get("cases", {}).items()},
        default=tuple(doc.get("default", ())),
        on_timeout=tuple(doc.get("on_timeout", ())),
        outputs=tuple(field_from_dict(f) for f in doc.get("outputs", ())),
        **{k: doc[k] for k in _PLAIN_STEP_FIELDS if k in doc},
    )


def _ref_to_json(ref: Ref) -> Any:
    return ref.value if ref.source == "const" else str(ref)


def workflow_to_dict(w: Workflow) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": w.id, "version": w.version} if w.id else {}
    doc |= {"name": w.name, "description": w.description}
    if w.linear:
        doc["services"] = [step.service for step in w.steps]
    else:
        doc["steps"] = [step_to_dict(step) for step in w.steps]
    doc["inputs"] = [field_to_dict(f) for f in w.inputs]
    doc["outputs"] = [field_to_dict(f) for f in w.outputs]
    if w.timeout is not None:
        doc["timeout"] = w.timeout
    if w.notify is not None:
        doc["notify"] = w.notify
    return doc


def workflow_from_dict(doc: dict[str, Any]) -> Workflow:
    """A workflow document in either form, with its id and version if it has them."""
    linear = "services" in doc
    return Workflow(
        name=doc["name"],
        steps=linear_steps(doc["services"]) if linear else tuple(step_from_dict(s) for s in doc["steps"]),
        inputs=tuple(field_from_dict(f) for f in doc.get("inputs", ())),
        outputs=tuple(field_from_dict(f) for f in doc.get("outputs", ())),
        linear=linear,
        **{k: doc[k] for k in ("description", "timeout", "notify", "id", "version") if k in doc},
    )


# Fleets


def fleet_to_dict(f: Fleet) -> dict[str, Any]:
    return {
        "name": f.name,
        "driver": f.driver,
        "description": f.description,
        "settings": asdict(f.settings),
        "tasks": [
            {
                "name": t.name,
                "description": t.description,
                "inputs": [field_to_dict(i) for i in t.inputs],
                "outputs": [field_to_dict(o) for o in t.outputs],
                "timeout": t.timeout,
                "retry": retry_to_dict(t.retry),
                "idempotent": t.idempotent,
                "concurrency": t.concurrency,
            }
            for t in f.tasks
        ],
        "version": f.version,
    }


def fleet_from_dict(doc: dict[str, Any]) -> Fleet:
    tasks = tuple(
        FleetTask(
            name=t["name"],
            description=t.get("description", ""),
            inputs=tuple(field_from_dict(i) for i in t.get("inputs", ())),
            outputs=tuple(field_from_dict(o) for o in t.get("outputs", ())),
            timeout=t.get("timeout", 30.0),
            retry=RetryPolicy(**t.get("retry", {})),
            idempotent=t.get("idempotent", True),
            concurrency=t.get("concurrency", 10),
        )
        for t in doc.get("tasks", ())
    )
    return Fleet(
        name=doc["name"],
        driver=doc["driver"],
        settings=FleetSettings(**doc.get("settings", {})),
        tasks=tasks,
        description=doc.get("description", ""),
        version=doc.get("version", 0),
    )


def workload_to_dict(w: Workload) -> dict[str, Any]:
    return {
        "fleet": w.fleet,
        "name": w.name,
        "labels": dict(w.labels),
        "config": dict(w.config),
        "state": w.state.value,
        "host": w.host,
        "lease_until": w.lease_until,
        "failed_pings": w.failed_pings,
        "next_ping_at": w.next_ping_at,
        "message": w.message,
        "since": w.since,
        "version": w.version,
    }


def workload_from_dict(doc: dict[str, Any]) -> Workload:
    return Workload(
        fleet=doc["fleet"],
        name=doc["name"],
        labels=doc.get("labels", {}),
        config=doc.get("config", {}),
        state=WorkloadState(doc.get("state", WorkloadState.INITIALIZING)),
        host=doc.get("host"),
        lease_until=doc.get("lease_until", 0.0),
        failed_pings=doc.get("failed_pings", 0),
        next_ping_at=doc.get("next_ping_at", 0.0),
        message=doc.get("message", ""),
        since=doc.get("since", 0.0),
        version=doc.get("version", 0),
    )


def lifecycle_to_dict(e: LifecycleEvent) -> dict[str, Any]:
    return {
        "fleet": e.fleet,
        "workload": e.workload,
        "kind": e.kind.value,
        "at": e.at,
        "host": e.host,
        "message": e.message,
    }


def lifecycle_from_dict(doc: dict[str, Any]) -> LifecycleEvent:
    return LifecycleEvent(
        doc["fleet"], doc["workload"], Lifecycle(doc["kind"]), doc["at"], doc.get("host"), doc.get("message", "")
    )
