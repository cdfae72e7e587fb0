"""Requests generated from the app's own OpenAPI document: whatever comes in, no 5xx comes out.

The open API is tried at length; the API with tokens briefly, each request sent with a token of each role.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.api.conftest import ROLE_TOKENS
from tests.api.test_auth import bearer

# The app is made once per operation: its examples share it, and whatever they register.
SHARED_APP = HealthCheck.function_scoped_fixture


@pytest.fixture
def api_schema(app: Flask, workflow: dict[str, Any]) -> Any:
    """The schema, against an app where ``process-text`` and its services are registered."""
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


@pytest.fixture
def api_schema_with_roles(app_with_roles: Flask) -> Any:
    """The schema, against an app with a token of each role where ``process-text`` is registered."""
    return schemathesis.openapi.from_wsgi("/openapi.json", app_with_roles)


schema = schemathesis.pytest.from_fixture("api_schema")
schema_with_roles = schemathesis.pytest.from_fixture("api_schema_with_roles")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=[SHARED_APP])
def test_no_generated_request_makes_the_api_fail(case: Any) -> None:
    case.call_and_validate(checks=[not_a_server_error])


@schema_with_roles.parametrize()
@settings(max_examples=3, deadline=None, suppress_health_check=[SHARED_APP])
def test_no_generated_request_with_a_token_of_any_role_makes_the_api_fail(case: Any) -> None:
    for token in ROLE_TOKENS.values():
        case.call_and_validate(headers=bearer(token), checks=[not_a_server_error])
