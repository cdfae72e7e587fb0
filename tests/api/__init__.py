"""Tests of the REST API, through Flask's test client."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from werkzeug.test import TestResponse


def error(response: TestResponse, code: int) -> dict[str, Any]:
    """The body of ``response``, once checked to be the API's JSON error with status ``code``."""
    assert response.status_code == code, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body: dict[str, Any] = response.json
    assert body["code"] == code
    assert body["status"] == HTTPStatus(code).phrase
    assert body["message"]
    return body
