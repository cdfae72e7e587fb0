"""Whether the API answers."""

from __future__ import annotations

from machinery.api.blueprint import Blueprint

blp = Blueprint("health", __name__, description="Whether the API answers")


@blp.route("/healthcheck")
@blp.response(204)
@blp.doc(security=[])
def healthcheck() -> None:
    """The API is up"""
