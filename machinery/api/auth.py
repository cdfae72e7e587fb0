"""Optional bearer-token authentication and roles, for the whole app in one ``before_request`` hook.

With tokens configured (``MACHINERY_API_TOKENS``), every request must carry ``Authorization: Bearer <token>``
with one of them, but for those that reveal or change nothing: the health check, the OpenAPI document,
Swagger UI, and the dashboard's page and files (its data comes from the API, and is protected). A request
without a known token is answered 401, and one whose token's role is not enough 403, before anything reads
it. Each view says the role it needs with :func:`requires`; one that does not needs an admin's. With no
tokens, the API is open. ``GET /whoami`` answers the role of the token sent, for the dashboard.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from flask import Flask, g, request
from flask_smorest.utils import load_info_from_docstring
from marshmallow import Schema, fields
from werkzeug.routing import RequestRedirect

from machinery.api.blueprint import Blueprint
from machinery.api.errors import Api, ErrorResponse, error_response
from machinery.bootstrap import Role

SCHEME = "bearerAuth"
"""The name of the security scheme in the OpenAPI document."""

ROLE_EXTENSION = "x-machinery-role"
"""The OpenAPI extension naming the role an operation needs."""

CHALLENGE = ("WWW-Authenticate", 'Bearer realm="machinery"')

OPEN_BLUEPRINTS = frozenset({"api-docs", "swagger_ui", "dashboard", "callbacks"})
"""flask-smorest's (the OpenAPI document), flask-swagger-ui's, the dashboard's page and static files, and the
callbacks, whose URL holds their credential."""

OPEN_ENDPOINTS = frozenset({"health.healthcheck", "health.readiness"})

_ROLE = "machinery_role"
"""The attribute of a view function holding the role it needs."""

View = TypeVar("View", bound=Callable[..., Any])

blp = Blueprint("auth", __name__, description="The role of the bearer token sent")


def requires(role: Role) -> Callable[[View], View]:
    """Decorate a view (a function, or a method of a MethodView): with tokens configured, it needs a token of
    ``role`` or of a role that includes it. The OpenAPI operation says so, in ``x-machinery-role`` and in its
    description."""

    enough = " or ".join(other for other in Role if other.includes(role))
    sentence = f"With tokens configured, this needs a token whose role is {enough}."

    def decorate(view: View) -> View:
        description = load_info_from_docstring(view.__doc__ or "").get("description")
        documented = Blueprint.doc(
            **{ROLE_EXTENSION: role.value, "description": f"{description}\n\n{sentence}" if description else sentence}
        )(view)
        setattr(documented, _ROLE, role)
        return cast(View, documented)

    return decorate


def required_role(view: Callable[..., Any], method: str) -> Role | None:
    """The role that ``view`` says ``method`` needs, or None if it says none."""
    view_class = getattr(view, "view_class", None)
    if view_class is None:
        return getattr(view, _ROLE, None)
    # As MethodView dispatches: a HEAD without its own method is a GET.
    name = "get" if method == "HEAD" and not hasattr(view_class, "head") else method.lower()
    return getattr(getattr(view_class, name, None), _ROLE, None)


def spec_options(tokens: Mapping[str, Role]) -> dict[str, Any]:
    """The OpenAPI document's options: with tokens, every operation needs the bearer scheme unless it says not."""
    return {"security": [{SCHEME: []}]} if tokens else {}


def protect(app: Flask, api: Api, tokens: Mapping[str, Role]) -> None:
    """Declare the bearer scheme in ``api``'s document and, with ``tokens``, refuse ``app``'s requests without
    one, or with one whose role is not enough."""
    api.spec.components.security_scheme(SCHEME, {"type": "http", "scheme": "bearer"})
    if not tokens:
        return
    known = [(token.encode(), role) for token, role in tokens.items()]

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
        role = _role_of(token.encode(), known)
        if role is None:
            return error_response(401, "the bearer token is not valid", headers=[CHALLENGE])
        g.role = role
        if request.endpoint is None:  # no such URL or method: the routing error answers
            return None
        # A view that says nothing needs an admin's token, so that forgetting to say is never an opening.
        needed = required_role(app.view_functions[request.endpoint], request.method) or Role.ADMIN
        if not role.includes(needed):
            return error_response(
                403, f"the {role} token may not {request.method} {request.path}: that needs the {needed} role"
            )
        return None


def _role_of(token: bytes, known: list[tuple[bytes, Role]]) -> Role | None:
    # Compared with every token, without stopping at a match, so that timing does not tell which one it is.
    matches = [role for candidate, role in known if hmac.compare_digest(token, candidate)]
    return matches[0] if matches else None


class WhoAmISchema(Schema):
    role = fields.Enum(Role, by_value=True, required=True, metadata={"description": "The token's role"})
    roles = fields.List(
        fields.Enum(Role, by_value=True),
        required=True,
        metadata={"description": "The roles whose requests the token may make: its own and those it includes"},
    )


@blp.route("/whoami")
@requires(Role.READER)
@blp.response(200, WhoAmISchema)
def whoami() -> dict[str, Any]:
    """The role of the bearer token sent; with no tokens configured, the API is open, as to an admin"""
    role: Role = g.get("role", Role.ADMIN)
    return {"role": role, "roles": [other for other in Role if role.includes(other)]}
