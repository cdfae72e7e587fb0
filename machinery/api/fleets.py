"""Fleets: their workloads (added and removed in bulk), the hosts that hold them, and their lifecycle events."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import ValidationError, fields, post_load, validate

from machinery.api.auth import requires
from machinery.api.blueprint import Blueprint, current_machinery
from machinery.api.schemas import (
    EVENT_LOCATION,
    REPLAYED,
    AckSchema,
    EventSchema,
    SubmitHeadersSchema,
    event_to_dict,
    submitted,
)
from machinery.bootstrap import Role
from machinery.codec import fleet_from_dict, fleet_to_dict, lifecycle_to_dict, workload_to_dict
from machinery.engine.errors import InvalidDefinition, NotFound
from machinery.engine.fleets import Fleet, Workload, WorkloadState
from machinery.engine.kinds.fleet import adhoc_name
from machinery.engine.state import Event
from machinery.fleets.registry import MAX_WORKLOADS, Fleets
from machinery.validation import NAME, FieldSchema, RetrySchema, StrictSchema

blp = Blueprint("fleets", __name__, description="Fleets of workloads, hosted by workers, health-checked and spread")

LABEL_KEY = validate.Regexp(
    r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$",
    error="a label's key starts with a letter or a digit and holds only letters, digits, '_', '.', '/' and '-'",
)


def current_fleets() -> Fleets:
    return current_machinery().fleets


class SettingsSchema(StrictSchema):
    ping_interval = fields.Float(load_default=10.0, metadata={"description": "Seconds between two pings"})
    ping_jitter = fields.Float(load_default=0.2, metadata={"description": "The interval's fraction pings are spread"})
    ping_timeout = fields.Float(load_default=5.0)
    init_timeout = fields.Float(load_default=25.0)
    dead_after = fields.Integer(load_default=3, metadata={"description": "Failed pings in a row before dead"})
    dead_cooldown = fields.Float(load_default=60.0, metadata={"description": "Seconds before a dead one is retried"})
    max_spread = fields.Integer(load_default=5, metadata={"description": "Workloads between hosts before moves"})
    max_moves = fields.Integer(load_default=100, metadata={"description": "Workloads moved per round at most"})
    init_concurrency = fields.Integer(load_default=8, metadata={"description": "Inits at once per host"})


class TaskSchema(StrictSchema):
    name = fields.String(required=True, validate=NAME)
    description = fields.String(load_default="", validate=validate.Length(max=2000))
    inputs = fields.List(fields.Nested(FieldSchema), load_default=list)
    outputs = fields.List(fields.Nested(FieldSchema), load_default=list)
    timeout = fields.Float(
        load_default=30.0,
        validate=validate.Range(0.001, 86400),
        metadata={"description": "Seconds a run on one workload may take"},
    )
    retry = fields.Nested(RetrySchema, load_default=dict)
    idempotent = fields.Boolean(
        load_default=True,
        metadata={"description": "Whether it may run again on a workload whose host was lost mid-run"},
    )
    concurrency = fields.Integer(
        load_default=10,
        validate=validate.Range(1, 1000),
        metadata={"description": "Workloads an ad hoc run runs it on at once"},
    )


class FleetSchema(StrictSchema):
    name = fields.String(required=True, validate=NAME)
    driver = fields.String(required=True, metadata={"description": "A driver: http, simulated, or an entry point's"})
    description = fields.String(load_default="", validate=validate.Length(max=2000))
    settings = fields.Nested(SettingsSchema, load_default=lambda: SettingsSchema().load({}))
    tasks = fields.List(fields.Nested(TaskSchema), load_default=list)
    version = fields.Integer(dump_only=True)

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Fleet:
        try:
            return fleet_from_dict(data)
        except InvalidDefinition as e:
            raise ValidationError(str(e), "settings") from e


class WorkloadSchema(StrictSchema):
    fleet = fields.String(dump_only=True)
    name = fields.String(required=True, validate=NAME)
    labels = fields.Dict(
        keys=fields.String(validate=LABEL_KEY),
        values=fields.String(validate=validate.Length(max=200)),
        load_default=dict,
    )
    config = fields.Dict(keys=fields.String(), load_default=dict, metadata={"description": "Checked by the driver"})
    state = fields.String(dump_only=True)
    host = fields.String(dump_only=True, allow_none=True)
    lease_until = fields.Float(dump_only=True)
    failed_pings = fields.Integer(dump_only=True)
    next_ping_at = fields.Float(dump_only=True)
    message = fields.String(dump_only=True)
    since = fields.Float(dump_only=True)
    version = fields.Integer(dump_only=True)

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Workload:
        return Workload(fleet="", name=data["name"], labels=data["labels"], config=data["config"])


class WorkloadsSchema(StrictSchema):
    workloads = fields.List(fields.Nested(WorkloadSchema), required=True, validate=validate.Length(1, MAX_WORKLOADS))


class NamesSchema(StrictSchema):
    names = fields.List(fields.String(validate=NAME), required=True, validate=validate.Length(1, MAX_WORKLOADS))


class ChangedSchema(StrictSchema):
    names = fields.List(fields.String(), metadata={"description": "The workloads added, or removed"})


class WorkloadQuerySchema(StrictSchema):
    state = fields.Enum(WorkloadState, by_value=True, load_default=None)
    label = fields.List(
        fields.String(validate=validate.Regexp(r"^[^=]+=.*$", error="key=value")),
        load_default=list,
        metadata={"description": "key=value, repeated: every label must match"},
    )
    host = fields.String(load_default=None)
    after = fields.String(load_default="", metadata={"description": "The last name of the page before"})
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))


class WorkloadPageSchema(StrictSchema):
    items = fields.List(fields.Nested(WorkloadSchema))
    next = fields.String(allow_none=True, metadata={"description": "``after`` for the next page; null at the end"})


class LifecycleEventSchema(StrictSchema):
    fleet = fields.String()
    workload = fields.String()
    kind = fields.String()
    at = fields.Float()
    host = fields.String(allow_none=True)
    message = fields.String()


class EventQuerySchema(StrictSchema):
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))


class HostSchema(StrictSchema):
    name = fields.String()
    alive = fields.Boolean()
    lease_until = fields.Float()
    started_at = fields.Float()
    workloads = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={"description": "By fleet"})


@blp.route("/fleets")
class FleetList(MethodView):
    @requires(Role.READER)
    @blp.response(200, FleetSchema(many=True))
    def get(self) -> list[dict[str, Any]]:
        """List the fleets, by name"""
        return [fleet_to_dict(f) for f in current_machinery().store.list_fleets()]

    @requires(Role.ADMIN)
    @blp.arguments(FleetSchema)
    @blp.response(201, FleetSchema)
    @blp.alt_response(409, response="CONFLICT")
    def post(self, fleet: Fleet) -> dict[str, Any]:
        """Register a fleet"""
        return fleet_to_dict(current_fleets().add_fleet(fleet))


@blp.route("/fleets/<name>")
class FleetByName(MethodView):
    @requires(Role.READER)
    @blp.response(200, FleetSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, name: str) -> dict[str, Any]:
        """Read a fleet"""
        return fleet_to_dict(current_machinery().store.get_fleet(name))

    @requires(Role.ADMIN)
    @blp.arguments(FleetSchema)
    @blp.response(200, FleetSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def put(self, fleet: Fleet, name: str) -> dict[str, Any]:
        """Replace a fleet's driver, settings and tasks"""
        return fleet_to_dict(current_fleets().replace_fleet(name, fleet))

    @requires(Role.ADMIN)
    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def delete(self, name: str) -> None:
        """Remove a fleet that has no workloads left, and whose tasks no workflow runs"""
        current_fleets().delete_fleet(name)


@blp.route("/fleets/<name>/workloads")
class FleetWorkloads(MethodView):
    @requires(Role.READER)
    @blp.arguments(WorkloadQuerySchema, location="query")
    @blp.response(200, WorkloadPageSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, query: dict[str, Any], name: str) -> dict[str, Any]:
        """List a fleet's workloads by name, filtered by state, labels and host, a page after another"""
        store = current_machinery().store
        store.get_fleet(name)
        labels = dict(label.split("=", 1) for label in query["label"])
        items = store.list_workloads(
            name, state=query["state"], labels=labels, host=query["host"], after=query["after"], limit=query["limit"]
        )
        full = len(items) == query["limit"]
        return {"items": [workload_to_dict(w) for w in items], "next": items[-1].name if full else None}

    @requires(Role.ADMIN)
    @blp.arguments(WorkloadsSchema)
    @blp.response(201, ChangedSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, body: dict[str, Any], name: str) -> dict[str, Any]:
        """Add workloads (up to 10,000 at once); those that exist already are left as they are"""
        return {"names": current_fleets().add_workloads(name, body["workloads"])}

    @requires(Role.ADMIN)
    @blp.arguments(NamesSchema)
    @blp.response(200, ChangedSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def delete(self, body: dict[str, Any], name: str) -> dict[str, Any]:
        """Remove workloads by name (up to 10,000 at once); their hosts stop them"""
        return {"names": current_fleets().remove_workloads(name, body["names"])}


class CountsSchema(StrictSchema):
    states = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={"description": "Workloads by state"})
    hosts = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={"description": "Workloads by host"})
    unassigned = fields.Integer(metadata={"description": "Workloads no host holds yet"})


@blp.route("/fleets/<name>/counts", methods=["GET"])
@requires(Role.READER)
@blp.response(200, CountsSchema)
@blp.alt_response(404, response="NOT_FOUND")
def fleet_counts(name: str) -> dict[str, Any]:
    """How many of a fleet's workloads are in each state, and on each host"""
    store = current_machinery().store
    store.get_fleet(name)
    states = {state.value: 0 for state in WorkloadState if state is not WorkloadState.REMOVED}
    hosts: dict[str, int] = {}
    unassigned = 0
    for (_, host, state), count in store.count_workloads(name).items():
        states[state] = states.get(state, 0) + count
        if host is None:
            unassigned += count
        else:
            hosts[host] = hosts.get(host, 0) + count
    return {"states": states, "hosts": hosts, "unassigned": unassigned}


@blp.route("/fleets/<name>/workloads/<workload>", methods=["GET"])
@requires(Role.READER)
@blp.response(200, WorkloadSchema)
@blp.alt_response(404, response="NOT_FOUND")
def get_workload(name: str, workload: str) -> dict[str, Any]:
    """Read a workload"""
    return workload_to_dict(current_machinery().store.get_workload(name, workload))


@blp.route("/fleets/<name>/events", methods=["GET"])
@requires(Role.READER)
@blp.arguments(EventQuerySchema, location="query")
@blp.response(200, LifecycleEventSchema(many=True))
@blp.alt_response(404, response="NOT_FOUND")
def fleet_events(query: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The latest lifecycle events of a fleet's workloads, newest first"""
    store = current_machinery().store
    store.get_fleet(name)
    return [lifecycle_to_dict(e) for e in store.list_lifecycle_events(name, limit=query["limit"])]


@blp.route("/fleets/<name>/workloads/<workload>/events", methods=["GET"])
@requires(Role.READER)
@blp.arguments(EventQuerySchema, location="query")
@blp.response(200, LifecycleEventSchema(many=True))
@blp.alt_response(404, response="NOT_FOUND")
def workload_events(query: dict[str, Any], name: str, workload: str) -> list[dict[str, Any]]:
    """The latest lifecycle events of one workload, newest first (a workload removed keeps its history)"""
    store = current_machinery().store
    store.get_fleet(name)
    return [lifecycle_to_dict(e) for e in store.list_lifecycle_events(name, workload, limit=query["limit"])]


@blp.route("/hosts", methods=["GET"])
@requires(Role.READER)
@blp.response(200, HostSchema(many=True))
def list_hosts() -> list[dict[str, Any]]:
    """The hosts of fleets (workers started with --fleets), whether alive, and the workloads each holds"""
    return [vars(h) for h in current_fleets().hosts()]


class TaskRequestSchema(StrictSchema):
    task = fields.String(required=True, validate=NAME)
    args = fields.Dict(
        keys=fields.String(), load_default=dict, metadata={"description": "The task's inputs, checked against them"}
    )
    selector = fields.Dict(
        keys=fields.String(validate=LABEL_KEY),
        values=fields.String(validate=validate.Length(max=200)),
        load_default=dict,
        metadata={"description": "Labels every workload chosen has; none chooses them all"},
    )


@blp.route("/fleets/<name>/tasks", methods=["POST"])
@requires(Role.PRODUCER)
@blp.arguments(SubmitHeadersSchema(), location="headers")
@blp.arguments(TaskRequestSchema)
@blp.response(202, AckSchema, description="Accepted: an event of the workflow '<fleet>:<task>'", headers=EVENT_LOCATION)
@blp.alt_response(
    200,
    schema=AckSchema,
    description="Sent before with this Idempotency-Key",
    headers=EVENT_LOCATION | REPLAYED,
    success=True,
)
@blp.alt_response(404, response="NOT_FOUND")
def run_task(headers: dict[str, str], body: dict[str, Any], name: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Run one of the fleet's tasks on every workload the selector chooses, as an event to follow like any other:
    its outputs are the results by workload, and the workloads skipped (not up) and failed"""
    return submitted(
        *current_machinery().adhoc.run(
            name, body["task"], body["args"], body["selector"], headers.get("idempotency_key")
        )
    )


class RunQuerySchema(StrictSchema):
    limit = fields.Integer(load_default=20, validate=validate.Range(1, 100))


@blp.route("/fleets/<name>/runs", methods=["GET"])
@requires(Role.READER)
@blp.arguments(RunQuerySchema, location="query")
@blp.response(200, EventSchema(many=True))
@blp.alt_response(404, response="NOT_FOUND")
def task_runs(query: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The latest ad hoc runs of the fleet's tasks, newest first: the events of their workflows '<fleet>:<task>'
    (a task never run ad hoc has none)"""
    machinery = current_machinery()
    runs: list[Event] = []
    for task in machinery.store.get_fleet(name).tasks:
        try:
            page = machinery.events.list_events(
                workflow=adhoc_name(name, task.name), status=None, offset=0, limit=query["limit"]
            )
        except NotFound:
            continue
        runs += page.items
    runs.sort(key=lambda event: event.created_at, reverse=True)
    return [event_to_dict(event, machinery.plans.for_event(event)) for event in runs[: query["limit"]]]
