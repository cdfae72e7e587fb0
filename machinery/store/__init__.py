"""Stores: the RegistryStore and EventStore ports, on SQLite (embedded, the default) and on MongoDB."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


def data_conditions(data: Mapping[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """What a search by event data asks, leaf by leaf: a path into the data, and the value found there.

    An object matches field by field, so ``{"customer": {"id": 7}}`` asks for ``customer.id`` to be 7;
    anything else is compared whole, and null also matches a field that is missing.
    """
    for key, value in data.items():
        if isinstance(value, dict):
            yield from data_conditions(value, (*path, key))
        else:
            yield (*path, key), value
