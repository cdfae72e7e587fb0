"""Callbacks: where a callback service posts the result of a call it took, and its heartbeats meanwhile.

The token in the URL is the credential: it answers for one attempt of one step, whatever the API's bearer
tokens, and these routes ask for none.
"""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validates_schema

from machinery.api.blueprint import Blueprint, current_events
from machinery.engine.calls import CallFailure
from machinery.validation import StrictSchema

blp = Blueprint("callbacks", __name__, description="Results that callback services post later")


class CallbackErrorSchema(StrictSchema):
    message = fields.String(required=True, metadata={"description": "Why the call failed"})
    transient = fields.Boolean(
        load_default=False,
        metadata={"description": "Whether another attempt may succeed (then the retry policy applies)"},
    )


class CallbackSchema(StrictSchema):
    outputs = fields.Dict(metadata={"description": "The service's outputs, checked against its contract"})
    error = fields.Nested(CallbackErrorSchema, metadata={"description": "Or why the call failed"})

    @validates_schema
    def _one_of(self, data: dict[str, Any], **_: Any) -> None:
        if ("outputs" in data) == ("error" in data):
            raise ValidationError("send either outputs or an error", "_schema")


class CallbackAnswerSchema(StrictSchema):
    event_id = fields.String(required=True)
    step = fields.String(required=True)
    status = fields.String(required=True, metadata={"description": "The step's status once the result is recorded"})


@blp.route("/callbacks/<token>", methods=["POST"])
@blp.arguments(CallbackSchema)
@blp.response(200, CallbackAnswerSchema)
@blp.alt_response(404, response="NOT_FOUND", description="No step waits with this token: forged, or of an earlier try")
@blp.alt_response(409, response="CONFLICT", description="The step waits for no callback any more: late, or repeated")
@blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
@blp.doc(security=[])
def post_result(body: dict[str, Any], token: str) -> dict[str, Any]:
    """Post the result of a call that a callback service took: its outputs, or its error"""
    error = body.get("error")
    failure = CallFailure(error["message"], error["transient"]) if error is not None else None
    event, step_id = current_events().callback(token, outputs=body.get("outputs"), error=failure)
    return {"event_id": event.id, "step": step_id, "status": event.steps[step_id].status.value}


@blp.route("/callbacks/<token>/heartbeat", methods=["POST"])
@blp.response(204)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
@blp.doc(security=[])
def post_heartbeat(token: str) -> None:
    """Say that the call is still under way: a service with a heartbeat must, before its heartbeat runs out"""
    current_events().heartbeat(token)
