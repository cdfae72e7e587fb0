"""Whether the API answers, and whether it can work: probes for a load balancer or an orchestrator."""

from __future__ import annotations

from typing import Any

from flask_smorest import abort
from marshmallow import Schema, fields

from machinery.api.blueprint import Blueprint, current_machinery

blp = Blueprint("health", __name__, description="Whether the API answers, and whether it can reach what it needs")


class ReadinessSchema(Schema):
    store = fields.String(required=True, metadata={"description": "ok"})
    broker = fields.String(required=True, metadata={"description": "ok, or embedded when the workers run in the API"})


@blp.route("/healthcheck")
@blp.response(204)
@blp.doc(security=[])
def healthcheck() -> None:
    """The API is up"""


@blp.route("/readiness")
@blp.response(200, ReadinessSchema)
@blp.alt_response(503, response="SERVICE_UNAVAILABLE")
@blp.doc(security=[])
def readiness() -> dict[str, Any]:
    """The API can reach its store, and its broker if workers run apart; 503 says which it cannot"""
    machinery = current_machinery()
    problems = machinery.unreachable()
    if problems:
        abort(503, message="not ready: " + "; ".join(problems))
    return {"store": "ok", "broker": "ok" if machinery.config.broker_url else "embedded"}
