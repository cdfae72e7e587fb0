"""The management API of services: register, read, replace and remove their typed contracts."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest.pagination import PaginationParameters

from machinery.api.auth import requires
from machinery.api.blueprint import Blueprint, current_registry, window
from machinery.bootstrap import Role
from machinery.codec import service_to_dict
from machinery.engine.model import Service
from machinery.validation import ServiceSchema

blp = Blueprint("services", __name__, description="Microservices and their typed inputs and outputs")


@blp.route("/services")
class Services(MethodView):
    @requires(Role.READER)
    @blp.response(200, ServiceSchema(many=True))
    @blp.paginate()
    def get(self, pagination_parameters: PaginationParameters) -> list[dict[str, Any]]:
        """List the services, by name"""
        page = current_registry().list_services(**window(pagination_parameters))
        pagination_parameters.item_count = page.total
        return [service_to_dict(s) for s in page.items]

    @requires(Role.ADMIN)
    @blp.arguments(ServiceSchema)
    @blp.response(201, ServiceSchema)
    @blp.alt_response(409, response="CONFLICT")
    def post(self, service: Service) -> dict[str, Any]:
        """Register a service"""
        return service_to_dict(current_registry().add_service(service))


@blp.route("/services/<name>")
class ServiceByName(MethodView):
    @requires(Role.READER)
    @blp.response(200, ServiceSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, name: str) -> dict[str, Any]:
        """Read a service"""
        return service_to_dict(current_registry().get_service(name))

    @requires(Role.ADMIN)
    @blp.arguments(ServiceSchema)
    @blp.response(200, ServiceSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def put(self, service: Service, name: str) -> dict[str, Any]:
        """Replace a service, unless a workflow using it would break"""
        return service_to_dict(current_registry().replace_service(name, service))

    @requires(Role.ADMIN)
    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def delete(self, name: str) -> None:
        """Remove a service no workflow uses"""
        current_registry().delete_service(name)
