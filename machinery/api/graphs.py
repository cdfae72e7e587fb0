"""Workflows and events drawn as graphs: SVG, PNG, or Graphviz DOT source.

The format is asked for with ``?format=`` or with a suffix, ``/graph.svg``;
the suffix wins. Drawing SVG and PNG needs Graphviz's ``dot`` binary: without
it they answer 503, and the DOT source is still served.
"""

from __future__ import annotations

from typing import Any

import graphviz
from flask import Response
from marshmallow import Schema, fields, validate

from machinery.api.auth import requires
from machinery.api.blueprint import Blueprint, current_events, current_plans, current_registry
from machinery.bootstrap import Role
from machinery.render import FORMATS, render
from machinery.render import event_graph as draw_event
from machinery.render import workflow_graph as draw_workflow

blp = Blueprint("graphs", __name__, description="Workflows and events drawn as graphs")

_SUFFIX = f"<any({', '.join(FORMATS)}):suffix>"
_PICTURE = {
    "200": {
        "description": "The graph, in the format asked for",
        "content": {media: {"schema": {"type": "string", "format": "binary"}} for media in FORMATS.values()},
    }
}


class GraphQuerySchema(Schema):
    format = fields.String(
        load_default="svg",
        validate=validate.OneOf(list(FORMATS)),
        metadata={"description": "svg (the default), png, or dot: Graphviz's source, which needs no Graphviz binary"},
    )


@blp.route("/workflows/<key>/graph", methods=["GET"], endpoint="workflow_graph")
@blp.route(f"/workflows/<key>/graph.{_SUFFIX}", methods=["GET"], endpoint="workflow_graph_file")
@requires(Role.READER)
@blp.arguments(GraphQuerySchema, location="query")
@blp.doc(responses=_PICTURE)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(503, response="SERVICE_UNAVAILABLE")
def workflow_graph(query: dict[str, Any], key: str, suffix: str | None = None) -> Response:
    """Draw a workflow, by id or name: its steps, their typed inputs and outputs, and what flows between them"""
    registry = current_registry()
    workflow = registry.get_workflow(key)
    return _picture(draw_workflow(workflow, registry.services_of(workflow)), suffix or query["format"])


@blp.route("/events/<event_id>/graph", methods=["GET"], endpoint="event_graph")
@blp.route(f"/events/<event_id>/graph.{_SUFFIX}", methods=["GET"], endpoint="event_graph_file")
@requires(Role.READER)
@blp.arguments(GraphQuerySchema, location="query")
@blp.doc(responses=_PICTURE)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(503, response="SERVICE_UNAVAILABLE")
def event_graph(query: dict[str, Any], event_id: str, suffix: str | None = None) -> Response:
    """Draw an event: the graph of the workflow version it runs, each step coloured by its state"""
    events = current_events()
    event = events.get(event_id)
    workflow = current_plans().for_event(event).workflow
    graph = draw_event(workflow, current_registry().services_of(workflow), event, events.item_counts(event))
    return _picture(graph, suffix or query["format"])


def _picture(graph: graphviz.Digraph, fmt: str) -> Response:
    return Response(render(graph, fmt), mimetype=FORMATS[fmt])
