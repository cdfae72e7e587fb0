"""Requests generated from the app's own OpenAPI document: whatever comes in, no 5xx comes out."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error


@pytest.fixture
def api_schema(app: Flask, workflow: dict[str, Any]) -> Any:
    """The schema, against an app where ``process-text`` and its services are registered."""
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
# The app is made once per operation: its examples share it, and whatever they register.
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_generated_request_makes_the_api_fail(case: Any) -> None:
    case.call_and_validate(checks=[not_a_server_error])
