"""Every error the API answers, in one JSON shape, and the one table from domain errors to HTTP.

    {"code": 422, "status": "Unprocessable Entity", "message": "...",
     "errors": {"field": ["..."]},      when request fields are wrong
     "problems": [{"message": ...}]}    when a definition or an event's data is

Client errors are logged at WARNING, server errors at ERROR.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any

import flask_smorest
from flask import request
from marshmallow import Schema, fields
from werkzeug.exceptions import HTTPException

from machinery.engine.errors import (
    Conflict,
    GraphvizMissing,
    InvalidData,
    InvalidDefinition,
    InvalidExpression,
    InvalidState,
    MachineryError,
    NotFound,
)

log = logging.getLogger(__name__)

HTTP_STATUS: dict[type[MachineryError], int] = {
    InvalidDefinition: 422,
    InvalidExpression: 422,
    InvalidData: 422,
    NotFound: 404,
    Conflict: 409,
    InvalidState: 409,
    GraphvizMissing: 503,
    MachineryError: 500,
}
"""The status of each error, found by its class or the nearest base listed; the rest of the tree never reaches
a request, and would be a server error if it did."""

ErrorResponse = tuple[dict[str, Any], int, list[tuple[str, str]]]


class ProblemSchema(Schema):
    message = fields.String(required=True)
    step = fields.String(metadata={"description": "The workflow step concerned"})
    field = fields.String(metadata={"description": "The field concerned"})
    expected = fields.String(metadata={"description": "The type that was expected"})
    found = fields.String(metadata={"description": "The type that was found"})


class ErrorSchema(Schema):
    code = fields.Integer(required=True, metadata={"description": "The HTTP status code"})
    status = fields.String(required=True, metadata={"description": "The HTTP status phrase"})
    message = fields.String(required=True)
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "Messages by request field; nested fields are dotted: inputs.0.type"},
    )
    problems = fields.List(fields.Nested(ProblemSchema), metadata={"description": "What is wrong, one by one"})


class Api(flask_smorest.Api):
    """flask-smorest's Api, answering and documenting every HTTP error in machinery's shape."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error: HTTPException) -> ErrorResponse:
        return handle_http_exception(error)


def handle_machinery_error(error: MachineryError) -> ErrorResponse:
    """A domain error, with the status ``HTTP_STATUS`` gives its class and the problems it lists."""
    code = next(HTTP_STATUS[cls] for cls in type(error).__mro__ if cls in HTTP_STATUS)
    return error_response(code, error.message, problems=[p.to_dict() for p in error.problems])


def handle_http_exception(error: HTTPException) -> ErrorResponse:
    """Werkzeug's errors (404, 405, 413...) and webargs' (400, 415, 422), in machinery's shape."""
    code = error.code or 500
    data = getattr(error, "data", None) or {}
    errors = _by_field(data.get("messages", {}))
    whole = errors.pop("", [])
    if "message" in data:
        message = data["message"]
    elif whole:
        message = " ".join(whole)
    elif errors:
        message = f"invalid field{'s' if len(errors) > 1 else ''}: {', '.join(errors)}"
    elif code == 413 and request.max_content_length:
        message = (
            f"the body is larger than the {request.max_content_length} bytes allowed (MACHINERY_MAX_REQUEST_BYTES)"
        )
    else:
        message = error.description or HTTPStatus(code).phrase
    headers = [(k, v) for k, v in error.get_headers() if k.lower() != "content-type"]
    headers += list((data.get("headers") or {}).items())
    return error_response(code, message, errors=errors, headers=headers)


def error_response(
    code: int,
    message: str,
    *,
    errors: Mapping[str, list[str]] | None = None,
    problems: Iterable[Mapping[str, str]] = (),
    headers: list[tuple[str, str]] | None = None,
) -> ErrorResponse:
    """The API's error body, logged."""
    log.log(
        logging.ERROR if code >= 500 else logging.WARNING, "%s %s -> %d %s", request.method, request.path, code, message
    )
    body: dict[str, Any] = {"code": code, "status": HTTPStatus(code).phrase, "message": message}
    if errors:
        body["errors"] = dict(errors)
    problems = list(problems)
    if problems:
        body["problems"] = problems
    return body, code, headers or []


def _by_field(messages: Mapping[str, Any]) -> dict[str, list[str]]:
    """webargs' messages, ``{location: {field: {index: {field: [...]}}}}``, as ``{"field.index.field": [...]}``.

    Messages about a whole body or query string go under ``""``.
    """
    flat: dict[str, list[str]] = {}
    for in_location in messages.values():
        _flatten(in_location, "", flat)
    return flat


def _flatten(messages: Any, path: str, into: dict[str, list[str]]) -> None:
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            # marshmallow files an object's own errors, not its fields', under "_schema".
            if key == "_schema":
                _flatten(value, path, into)
            else:
                _flatten(value, f"{path}.{key}" if path else str(key), into)
    else:
        into.setdefault(path, []).extend(str(m) for m in (messages if isinstance(messages, list) else [messages]))
