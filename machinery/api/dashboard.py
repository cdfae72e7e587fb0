"""The dashboard: one page of plain HTML, CSS and JavaScript over the API, served at ``/`` and ``/ui``.

Its script is native ES modules, one per page and ``shared.js``, which the browser loads from the static folder
as they are. It is no part of the API, so it stays out of the OpenAPI document.
"""

from __future__ import annotations

from flask import Blueprint, Response

bp = Blueprint("dashboard", __name__, static_folder="static/dashboard", static_url_path="/ui/static")


@bp.get("/")
@bp.get("/ui")
def index() -> Response:
    """The page; it finds its way from the URL's fragment (``#/workflows/process-text``)."""
    return bp.send_static_file("index.html")
