"""The REST API: the management API of services and workflows, and the consumer API of events.

``create_app`` is the app factory; ``flask --app machinery.api run`` finds it.
The OpenAPI document is served at ``/openapi.json`` and Swagger UI, from
files shipped with the flask-swagger-ui package, at ``/docs``. With
``MACHINERY_API_TOKENS`` set, requests need a bearer token whose role allows them (see ``auth``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask_swagger_ui import get_swaggerui_blueprint

from machinery.api import (
    auth,
    callbacks,
    dashboard,
    events,
    executables,
    fleets,
    graphs,
    metrics,
    probes,
    schedules,
    services,
    workflows,
)
from machinery.api.blueprint import EXTENSION
from machinery.api.errors import Api, handle_machinery_error
from machinery.bootstrap import Config, Machinery
from machinery.engine.errors import MachineryError

DEFAULTS: Mapping[str, Any] = {
    "API_TITLE": "machinery",
    "API_VERSION": "1",
    "OPENAPI_VERSION": "3.0.3",
    "OPENAPI_URL_PREFIX": "/",
    "OPENAPI_JSON_PATH": "openapi.json",
}


def create_app(machinery: Machinery | None = None, config: Mapping[str, Any] | None = None) -> Flask:
    """The API of ``machinery``, by default the one ``MACHINERY_*`` environment variables configure.

    Flask settings come from ``DEFAULTS`` and ``MAX_CONTENT_LENGTH`` from ``MACHINERY_MAX_REQUEST_BYTES``, then
    ``MACHINERY_FLASK_*`` environment variables, then ``config``.
    """
    # No /static: the dashboard's blueprint serves its files, and an endpoint of Flask's own would need a role.
    app = Flask(__name__, static_folder=None)
    machinery = machinery or Machinery(Config.from_env())
    app.config.from_mapping(DEFAULTS, MAX_CONTENT_LENGTH=machinery.config.max_request_bytes)
    app.config.from_prefixed_env("MACHINERY_FLASK")
    app.config.from_mapping(config or {})
    app.extensions[EXTENSION] = machinery

    tokens = machinery.config.api_tokens
    api = Api(app, spec_kwargs=auth.spec_options(tokens))
    auth.protect(app, api, tokens)
    app.register_error_handler(MachineryError, handle_machinery_error)
    for module in (probes, services, executables, workflows, events, callbacks, graphs, schedules, fleets, auth):
        api.register_blueprint(module.blp)
    app.register_blueprint(dashboard.bp)
    metrics.init_app(app)
    app.register_blueprint(get_swaggerui_blueprint("/docs", "/openapi.json", config={"app_name": "machinery"}))
    return app
