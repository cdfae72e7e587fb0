"""Logging, configured in one place: a text line per record by default, or with ``MACHINERY_LOG_FORMAT=json``
one JSON object per line, for a log collector to read without a parser of its own.

A JSON line carries the record's ``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``, and the fields
that :func:`context` sets around the code that logs: the runner names the ``event_id``, ``step`` and ``attempt``
of the unit it is handling.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"

_fields: ContextVar[Mapping[str, Any]] = ContextVar("machinery_log_fields", default=MappingProxyType({}))


@contextmanager
def context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to the JSON lines of the records logged within, in this thread (or task) only."""
    token = _fields.set({**_fields.get(), **fields})
    try:
        yield
    finally:
        _fields.reset(token)


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON, with the fields of the :func:`context` it was logged in."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields.get(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


def configure(fmt: str = "text", level: int | str = logging.INFO) -> None:
    """Send every record of ``level`` or above to standard error in ``fmt``, one of ``FORMATS``, and the
    warnings too; the root logger's handlers are replaced, so each library's logger (gunicorn's, Celery's)
    propagates to this one."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)
