"""What every resource of the API shares: its Blueprint, the use cases it serves, its pages.

A resource takes the use case it needs (``current_registry()``, ``current_events()``); only those
reporting on the whole deployment, its store and broker, take the :class:`Machinery` itself.
"""

from __future__ import annotations

import json
import re
from typing import Any, cast

import flask_smorest
from flask import Request, current_app
from flask_smorest.pagination import PaginationParameters
from marshmallow import Schema
from webargs.flaskparser import FlaskParser, abort, is_json_request

from machinery.bootstrap import Machinery
from machinery.registry import Registry
from machinery.runtime import Events, Plans

EXTENSION = "machinery"

MAX_OFFSET = 2**63 - 1
"""The largest offset stores take (SQLite and MongoDB count in signed 64 bits); a page past it is empty anyway."""


def current_machinery() -> Machinery:
    """The :class:`Machinery` the current app was created with."""
    return cast(Machinery, current_app.extensions[EXTENSION])


def current_registry() -> Registry:
    """The current app's services and workflows."""
    return current_machinery().registry


def current_events() -> Events:
    """The current app's events."""
    return current_machinery().events


def current_plans() -> Plans:
    """The current app's compiled workflow versions, which order an event's steps."""
    return current_machinery().plans


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def nests_deeper(text: bytes, limit: int) -> bool:
    """Whether the JSON ``text`` nests arrays and objects more than ``limit`` deep, found by counting brackets
    outside strings, without parsing (which recurses, and fails past a thousand levels or so)."""
    depth = 0
    for bracket in _STRING.sub(b"", text).translate(None, _NOT_BRACKETS):
        if bracket in b"[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def window(pagination: PaginationParameters) -> dict[str, int]:
    """The ``offset`` and ``limit`` of the requested page, for a store's list method."""
    return {"offset": min(pagination.first_item, MAX_OFFSET), "limit": pagination.page_size}


class JsonParser(FlaskParser):
    """webargs' parser, refusing a body that does not say it is JSON instead of reading it as empty, and one that
    nests deeper than ``MACHINERY_MAX_JSON_DEPTH`` before parsing it."""

    def load_json(self, req: Request, schema: Schema) -> Any:
        if not is_json_request(req):
            abort(415, message=f"the body should be application/json, not {req.mimetype or 'untyped'}")
        limit = current_machinery().config.max_json_depth
        if nests_deeper(req.get_data(cache=True), limit):
            abort(400, message=f"the body nests deeper than {limit} levels (MACHINERY_MAX_JSON_DEPTH)")
        return super().load_json(req, schema)


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint, reading JSON bodies with :class:`JsonParser`, and telling in ``X-Pagination``
    whether its total is exact and its search complete, when a view says so (``pagination_parameters.extra``)."""

    ARGUMENTS_PARSER = JsonParser()

    def _set_pagination_metadata(
        self, page_params: PaginationParameters, result: Any, headers: dict[str, str] | None
    ) -> tuple[Any, dict[str, str]]:
        result, headers = super()._set_pagination_metadata(page_params, result, headers)
        extra = dict(getattr(page_params, "extra", {}))
        if extra:
            metadata = json.loads(headers[self.PAGINATION_HEADER_NAME])
            if extra.pop("positioned"):
                # A page after a cursor has no number.
                for key in ("page", "previous_page", "next_page"):
                    metadata.pop(key, None)
            headers[self.PAGINATION_HEADER_NAME] = json.dumps(metadata | extra)
        return result, headers
