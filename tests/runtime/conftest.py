"""The runtime tests' fixture; the harness behind it is in harness.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from machinery.store.sqlite import SqliteStore
from tests.runtime.harness import Runtime


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    store = SqliteStore(tmp_path / "machinery.db")
    yield Runtime(store)
    store.close()
