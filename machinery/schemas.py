"""The definition formats: JSON to model and back, in one place.

The API validates requests with these schemas, ``machinery apply`` loads
files with them, ``machinery export`` writes what they dump, and the stores
persist definitions in the same shape, so what one accepts the others read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates_schema

from machinery.engine.kinds import KINDS
from machinery.engine.model import (
    DELAY,
    FAIL,
    MAP,
    SERVICE,
    SUCCEED,
    SWITCH,
    TRANSFORM,
    WAIT,
    Field,
    HttpEndpoint,
    Ref,
    Service,
    Step,
    Workflow,
    linear_steps,
)
from machinery.engine.retry import RetryPolicy
from machinery.engine.types import SCALARS, FieldType

NAME = validate.Regexp(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
    error="must start with a letter or a digit and hold only letters, digits, '_', '.' and '-' (100 at most)",
)
FIELD_NAME = validate.Regexp(
    r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$",
    error="must start with a letter or '_' and hold only letters, digits, '_' and '-' (100 at most)",
)
_REF = re.compile(r"^\$\.(input|context|steps)((?:\.[A-Za-z0-9_-]+)+)$")


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE

    def get_attribute(self, obj: Any, attr: str, default: Any) -> Any:
        # Dump documents by key only: marshmallow falls back to attributes, and every dict has ``items``.
        return obj.get(attr, default) if isinstance(obj, Mapping) else super().get_attribute(obj, attr, default)


class FieldSchema(StrictSchema):
    name = fields.String(required=True, validate=FIELD_NAME)
    type = fields.String(required=True, validate=validate.OneOf(SCALARS))
    items = fields.String(validate=validate.OneOf(SCALARS), metadata={"description": "The item type of an array"})
    description = fields.String(load_default="", validate=validate.Length(max=2000))
    required = fields.Boolean(load_default=True)
    default = fields.Raw(allow_none=True, metadata={"description": "Value used when the field is absent"})

    @validates_schema
    def _items_only_for_arrays(self, data: dict[str, Any], **_: Any) -> None:
        if "items" in data and data["type"] != "array":
            raise ValidationError(f"only an array has an item type, not {data['type']}", "items")

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Field:
        extra = {"default": data["default"]} if "default" in data else {}
        return Field(
            name=data["name"],
            type=FieldType.parse(data["type"], data.get("items")),
            description=data["description"],
            required=data["required"],
            **extra,
        )


class RetrySchema(StrictSchema):
    attempts = fields.Integer(load_default=3, validate=validate.Range(1, 100))
    backoff = fields.Float(load_default=0.5, validate=validate.Range(0, 3600))
    multiplier = fields.Float(load_default=2.0, validate=validate.Range(1, 100))
    max_delay = fields.Float(load_default=30.0, validate=validate.Range(0, 86400))
    jitter = fields.Boolean(load_default=True)

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> RetryPolicy:
        return RetryPolicy(**data)


def _optional_url(description: str) -> fields.Url:
    """An http or https URL, or null; single-label host names (``http://upper:5000``) are fine."""
    return fields.Url(
        load_default=None,
        allow_none=True,
        require_tld=False,
        schemes={"http", "https"},
        metadata={"description": description},
    )


class ServiceSchema(StrictSchema):
    id = fields.String(dump_only=True)
    revision = fields.Integer(dump_only=True)
    name = fields.String(required=True, validate=NAME)
    kind = fields.String(load_default="http", validate=validate.OneOf(["http"]))
    description = fields.String(load_default="", validate=validate.Length(max=2000))
    address = fields.Url(required=True, require_tld=False, schemes={"http", "https"})
    method = fields.String(load_default="POST", validate=validate.OneOf(["POST", "PUT", "PATCH"]))
    headers = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    timeout = fields.Float(load_default=10.0, validate=validate.Range(0.001, 3600))
    retry = fields.Nested(RetrySchema, load_default=RetryPolicy)
    concurrency = fields.Integer(
        load_default=None,
        allow_none=True,
        validate=validate.Range(1, 10_000),
        metadata={"description": "At most this many calls at once, over every event and worker; none: no limit"},
    )
    healthcheck = _optional_url("A URL answering GET with 2xx while the service is up; probed if given")
    inputs = fields.List(fields.Nested(FieldSchema), load_default=list)
    outputs = fields.List(fields.Nested(FieldSchema), load_default=list)

    @validates_schema
    def _unique_fields(self, data: dict[str, Any], **_: Any) -> None:
        _check_unique(data.get("inputs", []), "inputs")
        _check_unique(data.get("outputs", []), "outputs")

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Service:
        return Service(
            name=data["name"],
            endpoint=HttpEndpoint(address=data["address"], method=data["method"], headers=data["headers"]),
            inputs=tuple(data["inputs"]),
            outputs=tuple(data["outputs"]),
            description=data["description"],
            timeout=data["timeout"],
            retry=data["retry"],
            concurrency=data["concurrency"],
            healthcheck=data["healthcheck"],
        )


_COMMON_STEP_FIELDS = {"id", "kind", "after"}
KIND_FIELDS = {
    SERVICE: {"service", "input", "output"},
    SWITCH: {"expression", "cases", "default"},
    DELAY: {"seconds", "until"},
    WAIT: {"signal", "timeout", "on_timeout", "outputs", "output"},
    TRANSFORM: {"compute", "outputs", "output"},
    MAP: {"service", "input", "output", "items", "item", "concurrency"},
    FAIL: {"message"},
    SUCCEED: {"message"},
}
_REQUIRED = {
    SERVICE: ("service",),
    SWITCH: ("expression",),
    WAIT: ("signal",),
    TRANSFORM: ("compute",),
    MAP: ("service", "items", "item"),
}
_STEP_IDS = fields.List(fields.String(validate=NAME), load_default=list)


class StepSchema(StrictSchema):
    id = fields.String(required=True, validate=NAME)
    kind = fields.String(load_default=SERVICE, validate=validate.OneOf(tuple(KINDS)))
    after = fields.List(
        fields.String(validate=NAME), load_default=list, metadata={"description": "Steps it runs after"}
    )
    service = fields.String(validate=NAME, metadata={"description": "service, map: the service to call"})
    input = fields.Dict(
        keys=fields.String(validate=FIELD_NAME),
        values=fields.Raw(allow_none=True),
        metadata={"description": "Service input -> '$.input.x', '$.context.x', '$.steps.<id>.x' or a constant"},
    )
    output = fields.Dict(
        keys=fields.String(validate=FIELD_NAME),
        values=fields.String(validate=FIELD_NAME),
        metadata={"description": "Output -> the name it takes in the context"},
    )
    expression = fields.String(
        validate=validate.Length(min=1, max=2000), metadata={"description": "switch: a CEL expression"}
    )
    cases = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=200)),
        values=fields.List(fields.String(validate=NAME), validate=validate.Length(min=1)),
        metadata={"description": "switch: value of the expression -> the steps of that route"},
    )
    default = fields.List(fields.String(validate=NAME), metadata={"description": "switch: the route otherwise"})
    seconds = fields.Float(validate=validate.Range(0, 366 * 86400), metadata={"description": "delay: how long"})
    until = fields.Raw(metadata={"description": "delay: a time (ISO 8601 or epoch seconds) or a reference to one"})
    signal = fields.String(validate=NAME, metadata={"description": "wait: the name of the signal"})
    timeout = fields.Float(
        validate=validate.Range(0.001, 366 * 86400, min_inclusive=True), metadata={"description": "wait: seconds"}
    )
    on_timeout = fields.List(
        fields.String(validate=NAME), metadata={"description": "wait: the route taken after the timeout"}
    )
    outputs = fields.List(fields.Nested(FieldSchema), metadata={"description": "wait, transform: what it produces"})
    compute = fields.Dict(
        keys=fields.String(validate=FIELD_NAME),
        values=fields.String(validate=validate.Length(min=1, max=2000)),
        metadata={"description": "transform: output -> a CEL expression"},
    )
    items = fields.String(metadata={"description": "map: a reference to the array to map over"})
    item = fields.String(validate=FIELD_NAME, metadata={"description": "map: the service input each item goes to"})
    concurrency = fields.Integer(validate=validate.Range(1, 1000), metadata={"description": "map: calls at once"})
    message = fields.String(validate=validate.Length(max=2000), metadata={"description": "fail, succeed: why"})

    @validates_schema
    def _fits_its_kind(self, data: dict[str, Any], **_: Any) -> None:
        kind = data.get("kind", SERVICE)
        allowed = KIND_FIELDS[kind] | _COMMON_STEP_FIELDS
        errors = {name: [f"does not apply to a {kind} step"] for name in data if name not in allowed}
        errors |= {name: [f"a {kind} step needs it"] for name in _REQUIRED.get(kind, ()) if name not in data}
        if kind == SWITCH and not data.get("cases") and not data.get("default"):
            errors["cases"] = ["a switch needs at least one case or a default"]
        if kind == DELAY and ("seconds" in data) == ("until" in data):
            errors["seconds"] = ["a delay needs either 'seconds' or 'until'"]
        if kind == WAIT and data.get("on_timeout") and "timeout" not in data:
            errors["timeout"] = ["'on_timeout' needs a 'timeout'"]
        if errors:
            raise ValidationError(errors)

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Step:
        errors: dict[str, Any] = {}
        refs = {}
        for name, value in data.get("input", {}).items():
            try:
                refs[name] = parse_ref(value)
            except ValueError as e:
                errors.setdefault("input", {})[name] = [str(e)]
        extra: dict[str, Any] = {}
        for name in ("until", "items"):
            if name in data:
                try:
                    extra[name] = parse_ref(data[name])
                except ValueError as e:
                    errors[name] = [str(e)]
        if errors:
            raise ValidationError(errors)
        structured = ("input", "until", "items", "after", "default", "on_timeout", "cases", "outputs")
        plain = {k: v for k, v in data.items() if k not in structured}
        return Step(
            **plain,
            **extra,
            input=refs,
            after=tuple(data["after"]),
            default=tuple(data.get("default", ())),
            on_timeout=tuple(data.get("on_timeout", ())),
            cases={k: tuple(v) for k, v in data.get("cases", {}).items()},
            outputs=tuple(data.get("outputs", ())),
        )


class WorkflowSchema(StrictSchema):
    id = fields.String(dump_only=True)
    version = fields.Integer(dump_only=True)
    name = fields.String(required=True, validate=NAME)
    description = fields.String(load_default="", validate=validate.Length(max=2000))
    services = fields.List(
        fields.String(validate=NAME),
        validate=validate.Length(min=1, max=500),
        metadata={"description": "The linear form: services called in this order"},
    )
    steps = fields.List(
        fields.Nested(StepSchema),
        validate=validate.Length(min=1, max=500),
        metadata={"description": "The graph form: steps and what each runs after"},
    )
    inputs = fields.List(fields.Nested(FieldSchema), load_default=list)
    outputs = fields.List(fields.Nested(FieldSchema), load_default=list)
    timeout = fields.Float(
        load_default=None,
        allow_none=True,
        validate=validate.Range(0.001, 366 * 24 * 3600),
        metadata={"description": "Seconds an event has to end; past them it fails. None: no limit"},
    )
    notify = _optional_url("A URL that is sent each event, as a POST, once it has ended")
    operations = fields.List(
        fields.Raw(),
        validate=validate.Length(max=0, error="copy fields with a step's 'input' and 'output' mappings instead"),
        metadata={"description": "Kept for the seed's files; must be empty"},
    )

    @validates_schema
    def _one_form(self, data: dict[str, Any], **_: Any) -> None:
        if ("services" in data) == ("steps" in data):
            raise ValidationError("give either 'services' (a linear chain) or 'steps' (a graph), not both or neither")
        _check_unique(data.get("inputs", []), "inputs")
        _check_unique(data.get("outputs", []), "outputs")

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Workflow:
        linear = "services" in data
        return Workflow(
            name=data["name"],
            steps=linear_steps(data["services"]) if linear else tuple(data["steps"]),
            inputs=tuple(data["inputs"]),
            outputs=tuple(data["outputs"]),
            description=data["description"],
            linear=linear,
            timeout=data["timeout"],
            notify=data["notify"],
        )


class EventRequestSchema(StrictSchema):
    data = fields.Dict(
        keys=fields.String(), required=True, metadata={"description": "Must match the workflow's inputs"}
    )


def _check_unique(items: list[Field], key: str) -> None:
    names = [f.name for f in items]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValidationError(f"declared more than once: {', '.join(twice)}", key)


def parse_ref(value: Any) -> Ref:
    """A step input: a ``$.`` reference, or any other JSON value as a constant."""
    if not (isinstance(value, str) and value.startswith("$")):
        return Ref("const", value=value)
    match = _REF.match(value)
    if not match:
        raise ValueError(f"{value!r} is no reference; write $.input.<field>, $.context.<field> or $.steps.<id>.<field>")
    source, rest = match.group(1), tuple(match.group(2)[1:].split("."))
    if source == "steps":
        if len(rest) < 2:
            raise ValueError(f"{value!r} names a step but no field of its outputs")
        return Ref("step", rest[1:], step=rest[0])
    return Ref(source, rest)


def field_to_dict(f: Field) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": f.name, "type": f.type.name, "description": f.description}
    if f.type.items is not None:
        doc["items"] = f.type.items.name
    if not f.required:
        doc["required"] = False
    if f.has_default:
        doc["default"] = f.default
    return doc


def retry_to_dict(r: RetryPolicy) -> dict[str, Any]:
    return {
        "attempts": r.attempts,
        "backoff": r.backoff,
        "multiplier": r.multiplier,
        "max_delay": r.max_delay,
        "jitter": r.jitter,
    }


def service_to_dict(s: Service) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": s.id, "revision": s.revision} if s.id else {}
    return doc | {
        "name": s.name,
        "kind": s.kind,
        "description": s.description,
        "address": s.endpoint.address,
        "method": s.endpoint.method,
        "headers": dict(s.endpoint.headers),
        "timeout": s.timeout,
        "retry": retry_to_dict(s.retry),
        "concurrency": s.concurrency,
        "healthcheck": s.healthcheck,
        "inputs": [field_to_dict(f) for f in s.inputs],
        "outputs": [field_to_dict(f) for f in s.outputs],
    }


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
        "message": step.message,
    }
    for name in sorted(KIND_FIELDS[step.kind], key=list(values).index):
        value = values[name]
        if value is not None and value != [] and value != {} and value != "":
            doc[name] = value
    return doc


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


def load_service(doc: dict[str, Any]) -> Service:
    """A stored service document back into the model, with its id and revision."""
    return _STORED.get(
        ("service", doc.get("id"), doc.get("revision", 0)),
        lambda: replace(
            _SERVICE.load({k: v for k, v in doc.items() if k not in ("id", "revision")}),
            id=doc.get("id"),
            revision=doc.get("revision", 0),
        ),
    )


def load_workflow(doc: dict[str, Any]) -> Workflow:
    """A stored workflow document back into the model, with its id and version."""
    return _STORED.get(
        ("workflow", doc.get("id"), doc.get("version", 1)),
        lambda: replace(
            _WORKFLOW.load({k: v for k, v in doc.items() if k not in ("id", "version")}),
            id=doc.get("id"),
            version=doc.get("version", 1),
        ),
    )


class _Loaded:
    """Stored definitions already loaded, by (kind, id, revision or version).

    Ids are never reused and a revision or version never changes once written,
    so a key always means the same definition; loading one through marshmallow
    costs far more than reading it.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._loaded: dict[tuple[str, Any, Any], Any] = {}

    def get(self, key: tuple[str, Any, Any], load: Callable[[], Any]) -> Any:
        if key[1] is None:
            return load()
        found = self._loaded.get(key)
        if found is None:
            if len(self._loaded) >= self.size:
                self._loaded.clear()
            found = self._loaded[key] = load()
        return found


_SERVICE = ServiceSchema()
_WORKFLOW = WorkflowSchema()
_STORED = _Loaded(size=4096)
