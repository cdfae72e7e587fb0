"""For every suite: the database a MongoDB store is tested on.

A real server when ``MACHINERY_TEST_MONGO_URI`` is set (a database of its own for each test), else mongomock.

No MongoDB server runs on the development machines, so mongomock stands in there; the GitHub Actions workflow
(``.github/workflows/ci.yml``) sets the variable and runs the same tests against a real ``mongo`` container.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import mongomock
import pytest
from pymongo import MongoClient
from pymongo.database import Database

MONGO_URI = os.environ.get("MACHINERY_TEST_MONGO_URI") or None


def pytest_report_header() -> str:
    return f"MongoDB store tests: {'a real server (MACHINERY_TEST_MONGO_URI)' if MONGO_URI else 'mongomock'}"


@pytest.fixture
def mongo_database() -> Iterator[Database[dict[str, Any]]]:
    """A fresh, empty database for one test; on a real server, dropped afterwards."""
    if MONGO_URI is None:
        yield mongomock.MongoClient().db
        return
    # A server that is not there fails the test within seconds, rather than after pymongo's default 30.
    client: MongoClient[dict[str, Any]] = MongoClient(MONGO_URI, serverSelectionTimeoutMS=5000)
    name = f"machinery_test_{uuid4().hex}"
    try:
        yield client[name]
    finally:
        client.drop_database(name)
        client.close()
