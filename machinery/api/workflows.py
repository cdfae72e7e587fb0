"""The management API of workflows: chains of services whose types are checked when registered."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest.pagination import PaginationParameters

from machinery.api.auth import requires
from machinery.api.blueprint import Blueprint, current_registry, window
from machinery.bootstrap import Role
from machinery.codec import workflow_to_dict
from machinery.engine.model import Workflow
from machinery.validation import WorkflowSchema

blp = Blueprint("workflows", __name__, description="Workflows: services chained, their types checked")


@blp.route("/workflows")
class Workflows(MethodView):
    @requires(Role.READER)
    @blp.response(200, WorkflowSchema(many=True))
    @blp.paginate()
    def get(self, pagination_parameters: PaginationParameters) -> list[dict[str, Any]]:
        """List the workflows, by name"""
        page = current_registry().list_workflows(**window(pagination_parameters))
        pagination_parameters.item_count = page.total
        return [workflow_to_dict(w) for w in page.items]

    @requires(Role.ADMIN)
    @blp.arguments(WorkflowSchema)
    @blp.response(201, WorkflowSchema)
    @blp.alt_response(409, response="CONFLICT")
    def post(self, workflow: Workflow) -> dict[str, Any]:
        """Register a workflow, if every service it chains exists and their types fit"""
        return workflow_to_dict(current_registry().add_workflow(workflow))


@blp.route("/workflows/<key>")
class WorkflowByKey(MethodView):
    @requires(Role.READER)
    @blp.response(200, WorkflowSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, key: str) -> dict[str, Any]:
        """Read a workflow, by id or name"""
        return workflow_to_dict(current_registry().get_workflow(key))

    @requires(Role.ADMIN)
    @blp.arguments(WorkflowSchema)
    @blp.response(200, WorkflowSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def put(self, workflow: Workflow, key: str) -> dict[str, Any]:
        """Replace a workflow with its next version; running events keep theirs"""
        return workflow_to_dict(current_registry().replace_workflow(key, workflow))

    @requires(Role.ADMIN)
    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    def delete(self, key: str) -> None:
        """Remove a workflow; its events keep the version they run"""
        current_registry().delete_workflow(key)
