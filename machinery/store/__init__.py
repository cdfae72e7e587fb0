"""Stores: the RegistryStore and EventStore ports, on SQLite (embedded, the default) and on MongoDB."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from machinery.codec import service_from_dict, workflow_from_dict
from machinery.engine.model import Service, Workflow

T = TypeVar("T")


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


def load_service(doc: dict[str, Any]) -> Service:
    """A stored service document back into the model, with its id and revision."""
    return _LOADED.get(("service", doc["id"], doc.get("revision", 0)), lambda: service_from_dict(doc))


def load_workflow(doc: dict[str, Any]) -> Workflow:
    """A stored workflow document back into the model, with its id and version."""
    return _LOADED.get(("workflow", doc["id"], doc.get("version", 1)), lambda: workflow_from_dict(doc))


class _Loaded:
    """Stored definitions already loaded, by (kind, id, revision or version).

    Ids are never reused and a revision or version never changes once written,
    so a key always means the same definition, and the runtime reads the same
    few definitions for every step it runs.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._loaded: dict[tuple[str, str, int], Any] = {}

    def get(self, key: tuple[str, str, int], load: Callable[[], T]) -> T:
        found = self._loaded.get(key)
        if found is None:
            if len(self._loaded) >= self.size:
                self._loaded.clear()
            found = self._loaded[key] = load()
        return found


_LOADED = _Loaded(size=4096)
