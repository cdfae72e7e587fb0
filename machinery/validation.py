"""Validating the definitions users write: the schemas the API and ``machinery apply`` load them with.

Each schema checks a document of :mod:`machinery.codec`'s format, fills in its
defaults, and has the codec build the model from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates_schema

from machinery.codec import (
    KIND_FIELDS,
    executable_from_dict,
    parse_header,
    parse_ref,
    service_from_dict,
    workflow_from_dict,
)
from machinery.engine.errors import InvalidDefinition
from machinery.engine.kinds import KINDS
from machinery.engine.model import (
    CALLBACK,
    DELAY,
    DISCARD,
    FLEET,
    MAP,
    REDACTED,
    SERVICE,
    SWITCH,
    SYNC,
    TRANSFORM,
    VALUE_TYPES,
    WAIT,
    WORKFLOW,
    Executable,
    Service,
    Workflow,
)
from machinery.engine.types import SCALARS

NAME = validate.Regexp(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
    error="must start with a letter or a digit and hold only letters, digits, '_', '.' and '-' (100 at most)",
)
FIELD_NAME = validate.Regexp(
    r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$",
    error="must start with a letter or '_' and hold only letters, digits, '_' and '-' (100 at most)",
)


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
    searchable = fields.Boolean(
        load_default=False,
        metadata={"description": "A workflow's input of a scalar type only: index it, to search events by it"},
    )

    @validates_schema
    def _items_only_for_arrays(self, data: dict[str, Any], **_: Any) -> None:
        if "items" in data and data["type"] != "array":
            raise ValidationError(f"only an array has an item type, not {data['type']}", "items")


class RetrySchema(StrictSchema):
    attempts = fields.Integer(load_default=3, validate=validate.Range(1, 100))
    backoff = fields.Float(load_default=0.5, validate=validate.Range(0, 3600))
    multiplier = fields.Float(load_default=2.0, validate=validate.Range(1, 100))
    max_delay = fields.Float(load_default=30.0, validate=validate.Range(0, 86400))
    jitter = fields.Boolean(load_default=True)


def _optional_url(description: str) -> fields.Url:
    """An http or https URL, or null; single-label host names (``http://upper:5000``) are fine."""
    return fields.Url(
        load_default=None,
        allow_none=True,
        require_tld=False,
        schemes={"http", "https"},
        metadata={"description": description},
    )


FLAG = validate.Regexp(
    r"^(-{1,2}[A-Za-z0-9?][A-Za-z0-9_.?-]{0,99}|[A-Za-z_][A-Za-z0-9_-]{0,99})$",
    error="a flag ('-o', '--format') or a positional's name ('file'): letters, digits, '_', '.' and '-'",
)
ENV_NAME = validate.Regexp(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$", error="an environment variable's name")


class ArgumentSchema(StrictSchema):
    flag = fields.String(required=True, validate=FLAG)
    value = fields.Raw(metadata={"description": "The value, fixed in the definition"})
    input = fields.String(validate=FIELD_NAME, metadata={"description": "The service input that gives the value"})


_KIND_KEYS = {
    "http": {"address", "method", "headers"},
    "command": {"executable", "arguments", "stdin", "stdout", "environment", "transient_exit_codes"},
}


class ServiceSchema(StrictSchema):
    id = fields.String(dump_only=True)
    revision = fields.Integer(dump_only=True)
    name = fields.String(required=True, validate=NAME)
    kind = fields.String(load_default="http", validate=validate.OneOf(list(_KIND_KEYS)))
    description = fields.String(load_default="", validate=validate.Length(max=2000))
    address = fields.Url(
        require_tld=False, schemes={"http", "https"}, metadata={"description": "http: the URL called; required"}
    )
    method = fields.String(validate=validate.OneOf(["POST", "PUT", "PATCH"]), metadata={"description": "http"})
    executable = fields.String(validate=NAME, metadata={"description": "command: the executable run; required"})
    arguments = fields.List(
        fields.Nested(ArgumentSchema),
        validate=validate.Length(max=200),
        metadata={"description": "command: the flags passed, each alone, with a fixed value or an input's value"},
    )
    stdin = fields.String(
        allow_none=True, validate=FIELD_NAME, metadata={"description": "command: the input written to stdin"}
    )
    stdout = fields.String(
        validate=validate.OneOf(["text", "json"]),
        metadata={"description": "command: text (outputs exit_code, stdout, stderr, truncated) or json (an object)"},
    )
    environment = fields.Dict(
        keys=fields.String(validate=ENV_NAME),
        values=fields.String(),
        metadata={"description": "command: the program's whole environment"},
    )
    transient_exit_codes = fields.List(
        fields.Integer(validate=validate.Range(1, 255)),
        metadata={"description": "command: exit codes retried under the retry policy (75, EX_TEMPFAIL, say)"},
    )
    idempotent = fields.Boolean(
        load_default=True,
        metadata={"description": "If false, a step whose worker was lost mid-call fails instead of calling again"},
    )
    headers = fields.Dict(
        keys=fields.String(),
        values=fields.Raw(allow_none=True),
        metadata={
            "description": 'Header -> a value, or {"secret": "NAME"}, which the worker reads from '
            "MACHINERY_SECRET_NAME or the file NAME in MACHINERY_SECRETS_DIR when it calls. Reads show "
            "the literal values of credential headers as <redacted>, which is refused here"
        },
    )
    timeout = fields.Float(load_default=10.0, validate=validate.Range(0.001, 3600))
    retry = fields.Nested(RetrySchema, load_default=dict)
    concurrency = fields.Integer(
        load_default=None,
        allow_none=True,
        validate=validate.Range(1, 10_000),
        metadata={"description": "At most this many calls at once, over every event and worker; none: no limit"},
    )
    healthcheck = _optional_url("A URL answering GET with 2xx while the service is up; probed if given")
    mode = fields.String(
        load_default=SYNC,
        validate=validate.OneOf([SYNC, CALLBACK]),
        metadata={
            "description": "sync: its answer holds its outputs. callback: it answers 202 at once, and posts its "
            "result later to the URL sent in the X-Machinery-Callback header"
        },
    )
    callback_timeout = fields.Float(
        load_default=3600.0,
        validate=validate.Range(0.001, 30 * 24 * 3600),
        metadata={"description": "callback: seconds it has to post its result, after which the call timed out"},
    )
    heartbeat = fields.Float(
        load_default=None,
        allow_none=True,
        validate=validate.Range(0.001, 30 * 24 * 3600),
        metadata={"description": "callback: seconds it may go without posting a heartbeat while it works"},
    )
    inputs = fields.List(fields.Nested(FieldSchema), load_default=list)
    outputs = fields.List(fields.Nested(FieldSchema), load_default=list)

    @validates_schema
    def _unique_fields(self, data: dict[str, Any], **_: Any) -> None:
        _check_unique(data.get("inputs", []), "inputs")
        _check_unique(data.get("outputs", []), "outputs")

    @validates_schema
    def _heartbeat_of_a_callback(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("heartbeat") is not None and data.get("mode") != CALLBACK:
            raise ValidationError("only a callback service sends heartbeats", "heartbeat")

    @validates_schema
    def _fits_its_kind(self, data: dict[str, Any], **_: Any) -> None:
        kind = data.get("kind", "http")
        other = set().union(*(keys for name, keys in _KIND_KEYS.items() if name != kind))
        errors = {name: [f"does not apply to a {kind} service"] for name in data if name in other}
        required = "address" if kind == "http" else "executable"
        if required not in data:
            errors[required] = [f"a {kind} service needs it"]
        if kind == "command" and data.get("healthcheck"):
            errors["healthcheck"] = ["a command service has no health check"]
        if kind == "command" and data.get("mode") == CALLBACK:
            errors["mode"] = ["a command service answers when its program exits"]
        if errors:
            raise ValidationError(errors)

    @validates_schema
    def _header_values(self, data: dict[str, Any], **_: Any) -> None:
        errors: dict[str, list[str]] = {}
        for name, value in data.get("headers", {}).items():
            if value == REDACTED:
                # Read back from the API or an export: storing it would replace the real value.
                hidden = f"{REDACTED} is how reads hide a credential"
                errors[name] = [f'{hidden}: send the value, or a secret reference {{"secret": "NAME"}}']
                continue
            try:
                parse_header(value)
            except InvalidDefinition as e:
                errors[name] = [e.message]
        if errors:
            raise ValidationError(errors, "headers")

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Service:
        return service_from_dict(data)


class ParameterSchema(StrictSchema):
    flag = fields.String(required=True, validate=FLAG)
    description = fields.String(load_default="", validate=validate.Length(max=2000))
    value = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.OneOf(VALUE_TYPES),
        metadata={"description": "The type of the value it takes; null for a flag that takes none"},
    )
    choices = fields.List(fields.String(), metadata={"description": "enum: the values allowed"})
    requires_root = fields.Boolean(load_default=False)
    requires = fields.List(fields.String(validate=FLAG), load_default=list, metadata={"description": "Flags needed"})
    conflicts = fields.List(
        fields.String(validate=FLAG), load_default=list, metadata={"description": "Flags it cannot stand beside"}
    )


class ExecutableSchema(StrictSchema):
    id = fields.String(dump_only=True)
    revision = fields.Integer(dump_only=True)
    name = fields.String(required=True, validate=NAME)
    version = fields.String(load_default="", validate=validate.Length(max=100))
    path = fields.String(
        required=True,
        validate=validate.Regexp(r"^/[^\0]*$", error="an absolute path"),
        metadata={"description": "Absolute; under MACHINERY_COMMANDS_ALLOWED"},
    )
    description = fields.String(load_default="", validate=validate.Length(max=2000))
    parameters = fields.List(fields.Nested(ParameterSchema), load_default=list, validate=validate.Length(max=500))

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Executable:
        return executable_from_dict(data)


class CombinationSchema(StrictSchema):
    flags = fields.List(fields.String(validate=FLAG), required=True, validate=validate.Length(max=500))


_COMMON_STEP_FIELDS = {"id", "kind", "after"}
_REQUIRED = {
    SERVICE: ("service",),
    SWITCH: ("expression",),
    WAIT: ("signal",),
    TRANSFORM: ("compute",),
    MAP: ("items", "item"),
    WORKFLOW: ("workflow",),
    FLEET: ("fleet", "task"),
}


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
    concurrency = fields.Integer(
        validate=validate.Range(1, 1000), metadata={"description": "map, fleet: calls at once"}
    )
    results = fields.String(
        validate=validate.OneOf(("keep", DISCARD)),
        metadata={
            "description": "map: keep (the default) the answers in order as its output 'results', or discard them"
        },
    )
    message = fields.String(validate=validate.Length(max=2000), metadata={"description": "fail, succeed: why"})
    workflow = fields.String(validate=NAME, metadata={"description": "workflow: the workflow it runs as a child event"})
    version = fields.Integer(
        validate=validate.Range(1),
        metadata={"description": "workflow: the version it runs; left out, the version current when the step runs"},
    )
    fleet = fields.String(validate=NAME, metadata={"description": "fleet: the fleet whose task it runs"})
    task = fields.String(validate=NAME, metadata={"description": "fleet: the task it runs on each workload"})
    selector = fields.Raw(
        metadata={
            "description": "fleet: the labels a workload must have (an object of strings), or a reference to them"
        }
    )
    max_failed = fields.Integer(
        validate=validate.Range(0),
        metadata={"description": "fleet: workloads that may fail before the step fails; left out, any number"},
    )

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
        if kind == MAP and ("service" in data) == ("workflow" in data):
            errors["service"] = ["a map step calls either a 'service' or a 'workflow' for each item"]
        if kind == MAP and "version" in data and "workflow" not in data:
            errors["version"] = ["'version' pins the 'workflow' a map step runs"]
        errors = errors or _reference_errors(data)
        if errors:
            raise ValidationError(errors)


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
        return workflow_from_dict(data)


def _reference_errors(step: dict[str, Any]) -> dict[str, Any]:
    """What is wrong with the references of a step that fits its kind, by field."""
    errors: dict[str, Any] = {}
    for name, value in step.get("input", {}).items():
        try:
            parse_ref(value)
        except InvalidDefinition as e:
            errors.setdefault("input", {})[name] = [str(e)]
    selector = step.get("selector", {})
    if isinstance(selector, dict):
        wrong = [k for k, v in selector.items() if not isinstance(v, str)]
        if wrong:
            errors["selector"] = [f"a label's value is a string; {', '.join(map(repr, wrong))} are not"]
    elif not isinstance(selector, str):
        errors["selector"] = ["an object of labels, or a reference to one ('$.input.selector')"]
    for name in ("until", "items") + (("selector",) if isinstance(selector, str) else ()):
        if name in step:
            try:
                parse_ref(step[name])
            except InvalidDefinition as e:
                errors[name] = [str(e)]
    return errors


def _check_unique(items: list[dict[str, Any]], key: str) -> None:
    names = [f["name"] for f in items]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValidationError(f"declared more than once: {', '.join(twice)}", key)
