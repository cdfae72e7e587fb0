"""The engine tests' fixtures; the builders behind them are in builders.py."""

from __future__ import annotations

import pytest

from tests.engine.builders import (
    Driver,
    corrected_seed_services,
    diamond_services,
    diamond_workflow,
    seed_workflow,
)


@pytest.fixture
def text_chain() -> Driver:
    """The corrected seed: upper -> reverse -> space-counter, giving message and space_count."""
    return Driver(seed_workflow(), corrected_seed_services())


@pytest.fixture
def diamond() -> Driver:
    """``upper``, then ``reverse`` and ``space-counter`` in parallel, then ``join`` after both."""
    return Driver(diamond_workflow(), diamond_services())
