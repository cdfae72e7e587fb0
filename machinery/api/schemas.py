"""The API's own JSON shapes: events as users read them, and the parameters of the event endpoints.

Definitions are validated with :mod:`machinery.validation` and written with
:mod:`machinery.codec`, the format shared with the CLI and the stores.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from flask import url_for
from marshmallow import INCLUDE, Schema, ValidationError, fields, validate

from machinery.api.blueprint import current_machinery, nests_deeper
from machinery.engine.kinds import KINDS
from machinery.engine.model import Step
from machinery.engine.plan import Plan
from machinery.engine.state import Event, EventStatus, Item, StepState, StepStatus
from machinery.engine.types import type_of
from machinery.validation import FIELD_NAME, StrictSchema


class EventRequestSchema(StrictSchema):
    data = fields.Dict(
        keys=fields.String(), required=True, metadata={"description": "Must match the workflow's inputs"}
    )


class WorkflowVersionSchema(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    version = fields.Integer(required=True, metadata={"description": "The version the event runs, to its end"})


class AttemptSchema(Schema):
    attempt = fields.Integer(required=True)
    started_at = fields.DateTime(allow_none=True)
    ended_at = fields.DateTime(allow_none=True)
    error = fields.Dict(allow_none=True)


class ItemSchema(Schema):
    index = fields.Integer(required=True, metadata={"description": "Its place in the array the step maps over"})
    workload = fields.String(allow_none=True, metadata={"description": "fleet: the workload it runs on"})
    status = fields.String(required=True, validate=validate.OneOf([s.value for s in StepStatus]))
    note = fields.String(allow_none=True, metadata={"description": "fleet: why the workload was skipped"})
    attempts = fields.Integer(required=True)
    started_at = fields.DateTime(allow_none=True)
    ended_at = fields.DateTime(allow_none=True)
    inputs = fields.Dict(allow_none=True)
    outputs = fields.Dict(allow_none=True)
    error = fields.Dict(allow_none=True)


class ItemCountsSchema(Schema):
    total = fields.Integer(required=True)
    counts = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(),
        allow_none=True,
        metadata={"description": "How many are in each status; only in the answer about one event"},
    )


class ItemQuerySchema(Schema):
    status = fields.List(
        fields.String(validate=validate.OneOf([s.value for s in StepStatus])),
        metadata={"description": "Only the items in one of these statuses; repeat it for several"},
    )
    after = fields.Integer(
        load_default=-1, validate=validate.Range(-1), metadata={"description": "Only the items after this index"}
    )
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))


class EventStepSchema(Schema):
    id = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(tuple(KINDS)))
    service = fields.String(allow_none=True, metadata={"description": "The service it calls, if it calls one"})
    workflow = fields.String(allow_none=True, metadata={"description": "workflow: the workflow it runs as a child"})
    fleet = fields.String(allow_none=True, metadata={"description": "fleet: the fleet whose task it runs"})
    task = fields.String(allow_none=True, metadata={"description": "fleet: the task it runs on each workload"})
    child = fields.String(allow_none=True, metadata={"description": "workflow: the id of the child event it started"})
    status = fields.String(required=True, validate=validate.OneOf([s.value for s in StepStatus]))
    route = fields.String(allow_none=True, metadata={"description": "The route a switch or wait step took"})
    wakes_at = fields.DateTime(allow_none=True, metadata={"description": "When a waiting delay or wait times out"})
    items = fields.Nested(
        ItemCountsSchema,
        allow_none=True,
        metadata={"description": "A map or fleet step's items, once it has fanned out; each is read at /items"},
    )
    note = fields.String(allow_none=True, metadata={"description": "Say, that a map step's results were left out"})
    attempts = fields.Integer(required=True, metadata={"description": "Calls started, lost ones included"})
    started_at = fields.DateTime(allow_none=True, metadata={"description": "When the latest attempt started"})
    ended_at = fields.DateTime(allow_none=True)
    inputs = fields.Dict(allow_none=True, metadata={"description": "What the service was sent"})
    outputs = fields.Dict(allow_none=True, metadata={"description": "The declared outputs of its answer"})
    error = fields.Dict(allow_none=True)
    history = fields.List(fields.Nested(AttemptSchema), metadata={"description": "The failed or lost attempts"})
    next_attempt_at = fields.DateTime(allow_none=True, metadata={"description": "When a retrying step runs again"})


class NotificationSchema(Schema):
    status = fields.String(
        required=True,
        validate=validate.OneOf([s.value for s in StepStatus]),
        metadata={"description": "ready, running, retrying, then completed (delivered) or failed (given up)"},
    )
    attempts = fields.Integer(required=True)
    ended_at = fields.DateTime(allow_none=True, metadata={"description": "When the last attempt ended"})
    error = fields.Dict(allow_none=True)


class ParentSchema(Schema):
    event = fields.String(required=True, metadata={"description": "The id of the parent event"})
    step = fields.String(required=True, metadata={"description": "The parent's workflow step that started this one"})
    depth = fields.Integer(required=True, metadata={"description": "1 for a child of a top-level event, and so on"})


class EventSchema(Schema):
    id = fields.String(required=True)
    workflow = fields.Nested(WorkflowVersionSchema, required=True)
    status = fields.String(required=True, validate=validate.OneOf([s.value for s in EventStatus]))
    data = fields.Dict(required=True, metadata={"description": "The inputs, defaults filled in"})
    outputs = fields.Dict(allow_none=True, metadata={"description": "The workflow's outputs, once completed"})
    error = fields.Dict(allow_none=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)
    idempotency_key = fields.String(allow_none=True)
    deadline = fields.DateTime(
        allow_none=True, metadata={"description": "When it fails if it has not ended, from its workflow's timeout"}
    )
    notification = fields.Nested(
        NotificationSchema,
        allow_none=True,
        metadata={"description": "Its sending to its workflow's notify URL, once it has ended"},
    )
    parent = fields.Nested(
        ParentSchema,
        allow_none=True,
        metadata={"description": "For a child event, the step of the event that started it"},
    )
    steps = fields.List(fields.Nested(EventStepSchema), metadata={"description": "In the workflow's order"})


class AckSchema(Schema):
    event_id = fields.String(required=True)
    ack_date = fields.DateTime(required=True, metadata={"description": "When the event was accepted"})
    status = fields.String(required=True, validate=validate.OneOf([s.value for s in EventStatus]))


EVENT_LOCATION = {"Location": {"description": "The event's URL", "schema": {"type": "string"}}}
"""The header of an answer that made or found an event."""
REPLAYED = {"Idempotent-Replayed": {"description": "Always true", "schema": {"type": "string", "enum": ["true"]}}}
"""The header of an answer with the event an earlier request made with the same Idempotency-Key."""


class SubmitHeadersSchema(Schema):
    idempotency_key = fields.String(
        data_key="Idempotency-Key",
        validate=validate.Length(min=1, max=200),
        metadata={"description": "Sending the same key again for a workflow returns the event it created"},
    )


class SignalSchema(Schema):
    """Any JSON object: the waiting step checks it against the outputs it declares."""

    class Meta:
        unknown = INCLUDE


class DataQuery(fields.Field):
    """A JSON object in a query parameter, whose keys are field names at every level."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, Any]:
        limit = current_machinery().config.max_json_depth
        if isinstance(value, str) and nests_deeper(value.encode(), limit):
            raise ValidationError(f"nests deeper than {limit} levels (MACHINERY_MAX_JSON_DEPTH)")
        try:
            parsed = json.loads(value)
        except (TypeError, ValueError):
            raise ValidationError("is not JSON") from None
        if not isinstance(parsed, dict):
            raise ValidationError(f"should be a JSON object, not {type_of(parsed)}")
        for key in _keys(parsed):
            try:
                FIELD_NAME(key)
            except ValidationError as e:
                raise ValidationError(f"'{key}' is no field name: it {e.messages[0]}") from None
        return parsed


def _keys(value: dict[str, Any]) -> Iterator[str]:
    for key, inner in value.items():
        yield key
        if isinstance(inner, dict):
            yield from _keys(inner)


class Cursor(fields.Field):
    """Where a listing of events stands, as the API gave it in ``X-Next-Cursor``: opaque to clients (base64 of
    the last event's creation time and id), loaded as a :data:`~machinery.engine.ports.Position`."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> tuple[float, str]:
        try:
            created_at, event_id = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
            if isinstance(created_at, int | float) and not isinstance(created_at, bool) and isinstance(event_id, str):
                return float(created_at), event_id
        except (TypeError, ValueError, binascii.Error):
            pass
        raise ValidationError("is no cursor this API gave: pass X-Next-Cursor as it was received")


def cursor_of(event: Event) -> str:
    """The cursor of the page after ``event``, read by :class:`Cursor`."""
    position = json.dumps([event.created_at, event.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")


class EventQuerySchema(Schema):
    workflow = fields.String(metadata={"description": "A workflow's id or name"})
    status = fields.String(validate=validate.OneOf([s.value for s in EventStatus]))
    parent = fields.String(metadata={"description": "Only the child events of this event"})
    data = DataQuery(
        metadata={
            "type": "string",
            "description": "Only the events whose data holds these values, of the same JSON types: an object "
            "matches field by field, anything else whole, and null also matches a missing field",
            "example": '{"customer": {"id": 7}}',
        }
    )
    cursor = Cursor(
        metadata={
            "type": "string",
            "description": "The page after the one that answered with this X-Next-Cursor; in place of page, it "
            "costs the same however deep, and events sent meanwhile neither shift nor repeat any",
        }
    )


class BulkRetrySchema(Schema):
    workflow = fields.String(required=True, metadata={"description": "A workflow's id or name"})
    step = fields.String(metadata={"description": "Only the events that failed at this step"})
    limit = fields.Integer(
        load_default=1000,
        validate=validate.Range(1, 10_000),
        metadata={"description": "At most this many, newest first"},
    )


class SkippedSchema(Schema):
    event_id = fields.String(required=True)
    reason = fields.String(required=True)


class BulkRetryReportSchema(Schema):
    retried = fields.List(fields.String(), required=True, metadata={"description": "The ids of the events retried"})
    skipped = fields.List(fields.Nested(SkippedSchema), required=True, metadata={"description": "And of those not"})


def event_to_dict(event: Event, plan: Plan, counts: Mapping[str, dict[str, int]] | None = None) -> dict[str, Any]:
    """An event as :class:`EventSchema` dumps it, its steps in the order of the workflow it runs; with ``counts``,
    how many items of each map step are in each status."""
    return {
        "id": event.id,
        "workflow": {"id": event.workflow_id, "name": event.workflow_name, "version": event.workflow_version},
        "status": event.status.value,
        "data": event.data,
        "outputs": event.outputs,
        "error": event.error,
        "created_at": _time(event.created_at),
        "updated_at": _time(event.updated_at),
        "idempotency_key": event.idempotency_key,
        "deadline": _time(event.deadline),
        "notification": _notification(event.notification),
        "parent": event.parent,
        "steps": [_step(step, event.steps[step.id], (counts or {}).get(step.id)) for step in plan.order],
    }


def ack_to_dict(event: Event) -> dict[str, Any]:
    return {"event_id": event.id, "ack_date": _time(event.created_at), "status": event.status.value}


def submitted(event: Event, created: bool) -> tuple[dict[str, Any], int, dict[str, str]]:
    """The answer to a request that sent an event: 202 if it made it, 200 if an earlier one with its
    Idempotency-Key did; the event's URL either way."""
    location = {"Location": url_for("events.get_event", event_id=event.id)}
    if created:
        return ack_to_dict(event), 202, location
    return ack_to_dict(event), 200, location | {"Idempotent-Replayed": "true"}


def _step(step: Step, state: StepState, counts: dict[str, int] | None) -> dict[str, Any]:
    return {
        "id": step.id,
        "kind": step.kind,
        "service": step.service,
        "workflow": step.workflow,
        "fleet": step.fleet,
        "task": step.task,
        "child": state.child,
        "route": state.route,
        "wakes_at": _time(state.run_at) if state.status is StepStatus.WAITING else None,
        "items": {"total": state.fanout, "counts": counts} if state.fanout is not None else None,
        "note": state.note,
        **_state(state),
        "history": [
            {**attempt, "started_at": _time(attempt.get("started_at")), "ended_at": _time(attempt.get("ended_at"))}
            for attempt in state.history
        ],
        "next_attempt_at": _time(state.run_at) if state.status is StepStatus.RETRYING else None,
    }


def item_to_dict(item: Item) -> dict[str, Any]:
    return {"index": item.index, "workload": item.key, "note": item.state.note, **_state(item.state)}


def _state(state: StepState) -> dict[str, Any]:
    return {
        "status": state.status.value,
        "attempts": state.attempts,
        "started_at": _time(state.started_at),
        "ended_at": _time(state.ended_at),
        "inputs": state.inputs,
        "outputs": state.outputs,
        "error": state.error,
    }


def _notification(state: StepState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    return {
        "status": state.status.value,
        "attempts": state.attempts,
        "ended_at": _time(state.ended_at),
        "error": state.error,
    }


def _time(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)
