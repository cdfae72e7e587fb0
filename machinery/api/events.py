"""The consumer API: send events to workflows, follow them, cancel, pause, resume or retry them."""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask_smorest.pagination import PaginationParameters

from machinery.api.auth import requires
from machinery.api.blueprint import Blueprint, current_events, current_plans, window
from machinery.api.schemas import (
    EVENT_LOCATION,
    REPLAYED,
    AckSchema,
    BulkRetryReportSchema,
    BulkRetrySchema,
    EventQuerySchema,
    EventRequestSchema,
    EventSchema,
    ItemQuerySchema,
    ItemSchema,
    SignalSchema,
    SubmitHeadersSchema,
    cursor_of,
    event_to_dict,
    item_to_dict,
    submitted,
)
from machinery.bootstrap import Role
from machinery.engine.state import Event

blp = Blueprint("events", __name__, description="Events sent to workflows, and how far each has gone")

_NEXT = {
    "X-Next-Cursor": {
        "description": "The cursor of the next page, to pass as ``cursor``; absent once there is none",
        "schema": {"type": "string"},
    }
}


@blp.route("/e/<workflow>", methods=["POST"])
@requires(Role.PRODUCER)
# Instances, not classes: webargs would make both schemas again for every event accepted.
@blp.arguments(SubmitHeadersSchema(), location="headers")
@blp.arguments(EventRequestSchema())
@blp.response(202, AckSchema, description="Accepted, and stored", headers=EVENT_LOCATION)
@blp.alt_response(
    200,
    schema=AckSchema,
    description="Sent before with this Idempotency-Key",
    headers=EVENT_LOCATION | REPLAYED,
    success=True,
)
@blp.alt_response(404, response="NOT_FOUND")
def submit(headers: dict[str, str], body: dict[str, Any], workflow: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Send an event to a workflow, by its id or name"""
    return submitted(*current_events().submit(workflow, body["data"], headers.get("idempotency_key")))


@blp.route("/events", methods=["GET"])
@requires(Role.READER)
@blp.arguments(EventQuerySchema, location="query")
@blp.response(200, EventSchema(many=True), headers=_NEXT)
@blp.paginate()
@blp.alt_response(404, response="NOT_FOUND")
def list_events(
    query: dict[str, Any], pagination_parameters: PaginationParameters
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """List events, newest first

    Each answer's X-Next-Cursor, passed as ``cursor``, gives the next page in the same time however deep it is
    (``page`` reads past the events before it). X-Pagination's total is exact, except for a search by ``data``,
    whose count stops past 10,000 (``"total_exact": false``). A search on fields no workflow declares
    ``searchable`` reads the events one by one, and stops after a second: then ``"complete": false``, and the
    next cursor goes on from the last event found.
    """
    after = query.get("cursor")
    window_ = {"offset": 0, "limit": pagination_parameters.page_size} if after else window(pagination_parameters)
    page = current_events().list_events(
        workflow=query.get("workflow"),
        status=query.get("status"),
        data=query.get("data"),
        parent=query.get("parent"),
        after=after,
        **window_,
    )
    pagination_parameters.item_count = page.total
    pagination_parameters.extra = {  # read by Blueprint._set_pagination_metadata
        "total_exact": page.exact,
        "complete": page.complete,
        "positioned": after is not None,
    }
    full = len(page.items) == pagination_parameters.page_size
    headers = {"X-Next-Cursor": cursor_of(page.items[-1])} if page.items and (full or not page.complete) else {}
    return [_to_dict(event) for event in page.items], headers


@blp.route("/events/retry", methods=["POST"])
@requires(Role.PRODUCER)
@blp.arguments(BulkRetrySchema)
@blp.response(202, BulkRetryReportSchema)
@blp.alt_response(404, response="NOT_FOUND")
def retry_failed(body: dict[str, Any]) -> dict[str, Any]:
    """Retry the failed events of a workflow, after a fix, from the steps that failed"""
    report = current_events().retry_failed(body["workflow"], step=body.get("step"), limit=body["limit"])
    return {
        "retried": report.retried,
        "skipped": [{"event_id": event_id, "reason": reason} for event_id, reason in report.skipped],
    }


@blp.route("/events/<event_id>", methods=["GET"])
@requires(Role.READER)
@blp.response(200, EventSchema)
@blp.alt_response(404, response="NOT_FOUND")
def get_event(event_id: str) -> dict[str, Any]:
    """Read an event and each of its steps, with how many items of each map step are in each status"""
    events = current_events()
    event = events.get(event_id)
    return event_to_dict(event, current_plans().for_event(event), events.item_counts(event))


@blp.route("/events/<event_id>/cancel", methods=["POST"])
@requires(Role.PRODUCER)
@blp.response(200, EventSchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
def cancel(event_id: str) -> dict[str, Any]:
    """Cancel an unfinished event"""
    return _to_dict(current_events().cancel(event_id))


@blp.route("/events/<event_id>/pause", methods=["POST"])
@requires(Role.PRODUCER)
@blp.response(200, EventSchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
def pause(event_id: str) -> dict[str, Any]:
    """Pause an unfinished event: the calls under way finish, and nothing more starts until it is resumed"""
    return _to_dict(current_events().pause(event_id))


@blp.route("/events/<event_id>/resume", methods=["POST"])
@requires(Role.PRODUCER)
@blp.response(202, EventSchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
def resume(event_id: str) -> dict[str, Any]:
    """Resume a paused event: its ready steps go to the workers again"""
    return _to_dict(current_events().resume(event_id))


@blp.route("/events/<event_id>/retry", methods=["POST"])
@requires(Role.PRODUCER)
@blp.response(202, EventSchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
def retry(event_id: str) -> dict[str, Any]:
    """Run a failed event again from the steps that failed"""
    return _to_dict(current_events().retry(event_id))


@blp.route("/events/<event_id>/rerun", methods=["POST"])
@requires(Role.PRODUCER)
@blp.response(202, EventSchema, headers=EVENT_LOCATION)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
def rerun(event_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Send an event's data again, as a new event, to the current version of its workflow"""
    event = current_events().rerun(event_id)
    return _to_dict(event), 202, {"Location": url_for("events.get_event", event_id=event.id)}


@blp.route("/events/<event_id>/signals/<name>", methods=["POST"])
@requires(Role.PRODUCER)
@blp.arguments(SignalSchema)
@blp.response(202, EventSchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
@blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
def send_signal(body: dict[str, Any], event_id: str, name: str) -> dict[str, Any]:
    """Send a signal to an event; its body becomes the output of the step waiting for it"""
    return _to_dict(current_events().signal(event_id, name, body))


@blp.route("/events/<event_id>/steps/<step_id>/items", methods=["GET"])
@requires(Role.READER)
@blp.arguments(ItemQuerySchema, location="query")
@blp.response(200, ItemSchema(many=True))
@blp.alt_response(404, response="NOT_FOUND")
def list_items(query: dict[str, Any], event_id: str, step_id: str) -> list[dict[str, Any]]:
    """List the items of a map step in order, a page at a time: the next page is ``after`` the last index"""
    items = current_events().items(
        event_id, step_id, statuses=query.get("status"), after=query["after"], limit=query["limit"]
    )
    return [item_to_dict(item) for item in items]


def _to_dict(event: Event) -> dict[str, Any]:
    return event_to_dict(event, current_plans().for_event(event))
