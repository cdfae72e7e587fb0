"""Optional bearer-token authentication, for the whole app in one ``before_request`` hook.

With tokens configured (``MACHINERY_API_TOKENS``), every request must carry ``Authorization: Bearer <token>``
with one of them, but for those that reveal or change nothing: the health check, the OpenAPI document,
Swagger UI, and the dashboard's page and files (its data comes from the API, and is protected). A refused
request is answered 401 before anything reads it. With no tokens, the API is open.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any

from flask import Flask, request
from werkzeug.routing import RequestRedirect

from machinery.api.errors import Api, ErrorResponse, error_response

SCHEME = "bearerAuth"
"""The name of the security scheme in the OpenAPI document."""

CHALLENGE = ("WWW-Authenticate", 'Bearer realm="machinery"')

OPEN_BLUEPRINTS = frozenset({"api-docs", "swagger_ui", "dashboard"})
"""flask-smorest's (the OpenAPI document), flask-swagger-ui's, and the dashboard's page and static files."""

OPEN_ENDPOINTS = frozenset({"health.healthcheck", "health.readiness"})


def spec_options(tokens: Sequence[str]) -> dict[str, Any]:
    """The OpenAPI document's options: with tokens, every operation needs the bearer scheme unless it says not."""
    return {"security": [{SCHEME: []}]} if tokens else {}


def protect(app: Flask, api: Api, tokens: Sequence[str]) -> None:
    """Declare the bearer scheme in ``api``'s document and, with ``tokens``, refuse ``app``'s requests without one."""
    api.spec.components.security_scheme(SCHEME, {"type": "http", "scheme": "bearer"})
    if not tokens:
        return
    known = [token.encode() for token in tokens]

    @app.before_request
    def authenticate() -> ErrorResponse | None:
        if request.blueprint in OPEN_BLUEPRINTS or request.endpoint in OPEN_ENDPOINTS:
            return None
        # A redirect to a URL's canonical form (/docs to /docs/) runs nothing; the URL it leads to is checked.
        if isinstance(request.routing_exception, RequestRedirect):
            return None
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return error_response(401, "no bearer token: send Authorization: Bearer <token>", headers=[CHALLENGE])
        if not _one_of(token.encode(), known):
            return error_response(401, "the bearer token is not valid", headers=[CHALLENGE])
        return None


def _one_of(token: bytes, known: list[bytes]) -> bool:
    # Compared with every token, without stopping at a match, so that timing does not tell which one it is.
    matches = [hmac.compare_digest(token, candidate) for candidate in known]
    return any(matches)
