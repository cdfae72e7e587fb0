"""Whether the API answers, and whether it can work: probes for a load balancer or an orchestrator."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask_smorest import abort
from marshmallow import Schema, fields, validate

from machinery.api.auth import requires
from machinery.api.blueprint import Blueprint, current_machinery
from machinery.bootstrap import Role
from machinery.engine.health import DOWN, UNREACHABLE, UP, Health
from machinery.engine.ports import every

blp = Blueprint("health", __name__, description="Whether the API answers, and whether it can reach what it needs")


class ServiceHealthSchema(Schema):
    service = fields.String(required=True)
    status = fields.String(
        required=True,
        validate=validate.OneOf([UP, UNREACHABLE, DOWN]),
        metadata={"description": "down after MACHINERY_HEALTH_DOWN_AFTER failed probes in a row; its calls wait"},
    )
    since = fields.DateTime(required=True, metadata={"description": "When it entered this status"})
    checked_at = fields.DateTime(required=True, metadata={"description": "When it was last probed"})
    failures = fields.Integer(required=True, metadata={"description": "Probes failed in a row"})
    error = fields.String(allow_none=True, metadata={"description": "Why the last probe failed"})


class ReadinessSchema(Schema):
    store = fields.String(required=True, metadata={"description": "ok"})
    broker = fields.String(required=True, metadata={"description": "ok, or embedded when the workers run in the API"})


@blp.route("/healthcheck")
@blp.response(204)
@blp.doc(security=[])
def healthcheck() -> None:
    """The API is up"""


@blp.route("/health/services")
@requires(Role.READER)
@blp.response(200, ServiceHealthSchema(many=True))
def services_health() -> list[dict[str, Any]]:
    """The last probe of each service that has a health check, by name"""
    machinery = current_machinery()
    probed = machinery.store.health()
    names = sorted(s.name for s in every(machinery.registry.list_services) if s.healthcheck and s.name in probed)
    return [{"service": name, **_health_to_dict(probed[name])} for name in names]


def _health_to_dict(health: Health) -> dict[str, Any]:
    return {
        "status": health.status,
        "since": datetime.fromtimestamp(health.since, UTC),
        "checked_at": datetime.fromtimestamp(health.checked_at, UTC),
        "failures": health.failures,
        "error": health.error,
    }


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
