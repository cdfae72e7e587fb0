"""Schedules: a workflow started with fixed data on a cron expression or a fixed interval (see
:mod:`machinery.schedules`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_smorest.pagination import PaginationParameters
from marshmallow import Schema, fields, post_load, validate

from machinery.api.auth import requires
from machinery.api.blueprint import Blueprint, current_machinery, current_plans, window
from machinery.api.schemas import EventSchema, event_to_dict
from machinery.bootstrap import Role
from machinery.engine.timetable import CatchUp, Overlap, Schedule
from machinery.schedules import NewSchedule, Schedules
from machinery.validation import NAME, StrictSchema

blp = Blueprint("schedules", __name__, description="Schedules: workflows started on a cron expression or an interval")

_LOCATION = {"Location": {"description": "The schedule's URL", "schema": {"type": "string"}}}


def current_schedules() -> Schedules:
    return current_machinery().schedules


class ScheduleRequestSchema(StrictSchema):
    name = fields.String(required=True, validate=NAME)
    workflow = fields.String(required=True, metadata={"description": "The workflow's id or name"})
    data = fields.Dict(
        keys=fields.String(),
        load_default=dict,
        metadata={"description": "Sent with every run; checked against the workflow's inputs now"},
    )
    cron = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(1, 200),
        metadata={"description": "Five fields, as Debian's cron reads them: minute hour day month weekday"},
    )
    timezone = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(1, 100),
        metadata={"description": "The IANA time zone the cron expression is read in; UTC by default"},
    )
    interval = fields.Integer(
        load_default=None,
        allow_none=True,
        strict=True,
        validate=validate.Range(1, 366 * 24 * 3600),
        metadata={"description": "Seconds between two runs, from the Unix epoch, instead of a cron expression"},
    )
    overlap = fields.Enum(
        Overlap,
        by_value=True,
        load_default=Overlap.SKIP,
        metadata={"description": "skip: start no run while the event made last is unfinished; allow: start it"},
    )
    catch_up = fields.Enum(
        CatchUp,
        by_value=True,
        load_default=CatchUp.NONE,
        metadata={"description": "Of the runs missed while no scheduler ran: none, or the last one, once"},
    )
    paused = fields.Boolean(load_default=False)

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> NewSchedule:
        return NewSchedule(**data)


class WorkflowRefSchema(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)


class ScheduleSchema(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    workflow = fields.Nested(WorkflowRefSchema, required=True)
    data = fields.Dict(required=True)
    cron = fields.String(allow_none=True)
    timezone = fields.String(required=True)
    interval = fields.Integer(allow_none=True)
    overlap = fields.String(required=True, validate=validate.OneOf([o.value for o in Overlap]))
    catch_up = fields.String(required=True, validate=validate.OneOf([c.value for c in CatchUp]))
    paused = fields.Boolean(required=True)
    created_at = fields.DateTime(required=True)
    next_run_at = fields.DateTime(allow_none=True, metadata={"description": "When the next run is due"})
    last_run_at = fields.DateTime(allow_none=True)
    last_event_id = fields.String(allow_none=True, metadata={"description": "The event the last run made"})
    last_error = fields.String(allow_none=True, metadata={"description": "Why the last run made no event"})
    runs = fields.Integer(required=True, metadata={"description": "Runs that made an event"})
    skipped = fields.Integer(
        required=True, metadata={"description": "Runs not started, the event made before being unfinished"}
    )
    missed = fields.Integer(
        required=True, metadata={"description": "Times runs were found later than MACHINERY_SCHEDULE_GRACE"}
    )


class NextQuerySchema(Schema):
    count = fields.Integer(load_default=5, validate=validate.Range(1, 100))


class NextRunsSchema(Schema):
    runs = fields.List(fields.DateTime(), required=True, metadata={"description": "The next runs, in order"})


def schedule_to_dict(schedule: Schedule) -> dict[str, Any]:
    return {
        "id": schedule.id,
        "name": schedule.name,
        "workflow": {"id": schedule.workflow_id, "name": schedule.workflow_name},
        "data": schedule.data,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "interval": schedule.interval,
        "overlap": schedule.overlap.value,
        "catch_up": schedule.catch_up.value,
        "paused": schedule.paused,
        "created_at": _time(schedule.created_at),
        "next_run_at": None if schedule.paused else _time(schedule.next_run_at),
        "last_run_at": _time(schedule.last_run_at),
        "last_event_id": schedule.last_event_id,
        "last_error": schedule.last_error,
        "runs": schedule.runs,
        "skipped": schedule.skipped,
        "missed": schedule.missed,
    }


def _time(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


@blp.route("/schedules")
class ScheduleList(MethodView):
    @requires(Role.READER)
    @blp.response(200, ScheduleSchema(many=True))
    @blp.paginate()
    def get(self, pagination_parameters: PaginationParameters) -> list[dict[str, Any]]:
        """List the schedules, by name"""
        page = current_schedules().list_schedules(**window(pagination_parameters))
        pagination_parameters.item_count = page.total
        return [schedule_to_dict(schedule) for schedule in page.items]

    @requires(Role.ADMIN)
    @blp.arguments(ScheduleRequestSchema)
    @blp.response(201, ScheduleSchema, headers=_LOCATION)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def post(self, new: NewSchedule) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Create a schedule: its workflow is sent its data on a cron expression in a time zone, or every
        ``interval`` seconds; the data must fit the workflow's inputs"""
        schedule = current_schedules().create(new)
        location = url_for("schedules.ScheduleByKey", key=schedule.id)
        return schedule_to_dict(schedule), 201, {"Location": location}


@blp.route("/schedules/<key>")
class ScheduleByKey(MethodView):
    @requires(Role.READER)
    @blp.response(200, ScheduleSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, key: str) -> dict[str, Any]:
        """Read a schedule, by id or name"""
        return schedule_to_dict(current_schedules().get(key))

    @requires(Role.ADMIN)
    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    def delete(self, key: str) -> None:
        """Delete a schedule; the events it made stay"""
        current_schedules().delete(key)


@blp.route("/schedules/<key>/pause", methods=["POST"])
@requires(Role.ADMIN)
@blp.response(200, ScheduleSchema)
@blp.alt_response(404, response="NOT_FOUND")
def pause(key: str) -> dict[str, Any]:
    """Pause a schedule: it starts no run until it is resumed"""
    return schedule_to_dict(current_schedules().pause(key))


@blp.route("/schedules/<key>/resume", methods=["POST"])
@requires(Role.ADMIN)
@blp.response(200, ScheduleSchema)
@blp.alt_response(404, response="NOT_FOUND")
def resume(key: str) -> dict[str, Any]:
    """Resume a paused schedule from its first run after now; the runs due while it was paused are not started"""
    return schedule_to_dict(current_schedules().resume(key))


@blp.route("/schedules/<key>/next", methods=["GET"])
@requires(Role.READER)
@blp.arguments(NextQuerySchema, location="query")
@blp.response(200, NextRunsSchema)
@blp.alt_response(404, response="NOT_FOUND")
def next_runs(query: dict[str, Any], key: str) -> dict[str, Any]:
    """Preview a schedule's next runs; a paused one's are those it would have once resumed"""
    return {"runs": [_time(at) for at in current_schedules().next_runs(key, query["count"])]}


@blp.route("/schedules/<key>/events", methods=["GET"])
@requires(Role.READER)
@blp.response(200, EventSchema(many=True))
@blp.paginate()
@blp.alt_response(404, response="NOT_FOUND")
def list_events(key: str, pagination_parameters: PaginationParameters) -> list[dict[str, Any]]:
    """List the events a schedule made, the latest run first; each has the idempotency key
    ``schedule:<schedule id>:<the run's time in epoch seconds>``"""
    page = current_schedules().events(key, **window(pagination_parameters))
    pagination_parameters.item_count = page.total
    plans = current_plans()
    return [event_to_dict(event, plans.for_event(event)) for event in page.items]
