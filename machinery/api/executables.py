"""The management API of executables: the programs command services run, their parameters and their rules."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask.views import MethodView
from flask_smorest.pagination import PaginationParameters
from marshmallow import Schema, fields

from machinery.api.auth import requires
from machinery.api.blueprint import Blueprint, current_registry, window
from machinery.bootstrap import Role
from machinery.codec import executable_to_dict
from machinery.engine.model import Executable
from machinery.render import render, rules_graph
from machinery.validation import CombinationSchema, ExecutableSchema

blp = Blueprint("executables", __name__, description="Programs that command services run, and their flags' rules")


class ArgvSchema(Schema):
    argv = fields.List(fields.String(), required=True, metadata={"description": "The flags in the order passed"})


@blp.route("/executables")
class Executables(MethodView):
    @requires(Role.READER)
    @blp.response(200, ExecutableSchema(many=True))
    @blp.paginate()
    def get(self, pagination_parameters: PaginationParameters) -> list[dict[str, Any]]:
        """List the executables, by name"""
        page = current_registry().list_executables(**window(pagination_parameters))
        pagination_parameters.item_count = page.total
        return [executable_to_dict(e) for e in page.items]

    @requires(Role.ADMIN)
    @blp.arguments(ExecutableSchema)
    @blp.response(201, ExecutableSchema)
    @blp.alt_response(409, response="CONFLICT")
    def post(self, executable: Executable) -> dict[str, Any]:
        """Register an executable, once its path is allowed and its rules can be used"""
        return executable_to_dict(current_registry().add_executable(executable))


@blp.route("/executables/<name>")
class ExecutableByName(MethodView):
    @requires(Role.READER)
    @blp.response(200, ExecutableSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, name: str) -> dict[str, Any]:
        """Read an executable"""
        return executable_to_dict(current_registry().get_executable(name))

    @requires(Role.ADMIN)
    @blp.arguments(ExecutableSchema)
    @blp.response(200, ExecutableSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def put(self, executable: Executable, name: str) -> dict[str, Any]:
        """Replace an executable, unless a command service running it would break"""
        return executable_to_dict(current_registry().replace_executable(name, executable))

    @requires(Role.ADMIN)
    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def delete(self, name: str) -> None:
        """Remove an executable no command service runs"""
        current_registry().delete_executable(name)


@blp.route("/executables/<name>/check", methods=["POST"])
@requires(Role.READER)
@blp.arguments(CombinationSchema)
@blp.response(200, ArgvSchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
def check(combination: dict[str, Any], name: str) -> dict[str, Any]:
    """Check a combination of flags: their argv order, or every reason they cannot go together (422)"""
    return {"argv": list(current_registry().check_flags(name, combination["flags"]))}


@blp.route("/executables/<name>/rules.svg", methods=["GET"])
@requires(Role.READER)
@blp.response(200, content_type="image/svg+xml")
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(503, response="SERVICE_UNAVAILABLE")
def rules(name: str) -> Response:
    """Draw the rules of an executable: requires as arrows, conflicts as dashed red lines (SVG; needs Graphviz)"""
    graph = rules_graph(current_registry().get_executable(name))
    return Response(render(graph, "svg"), mimetype="image/svg+xml")
