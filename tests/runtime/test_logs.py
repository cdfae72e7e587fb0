"""JSON logs: each line parses, and the lines logged while a unit runs name its event, step and attempt."""

from __future__ import annotations

import io
import json
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from machinery import logs
from tests.engine.builders import corrected_seed_services, seed_workflow
from tests.runtime.harness import TEXT, Runtime

service_log = logging.getLogger("tests.service")
Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def json_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[Lines]:
    """Logging configured for JSON on standard error (kept in memory), and a function parsing what it logged."""
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logs.configure("json")
    yield lambda: [json.loads(line) for line in stderr.getvalue().splitlines()]
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def logging_service(name: str) -> Any:
    def answer(inputs: dict[str, Any]) -> Any:
        service_log.info("calling %s", name)
        return TEXT[name](inputs)

    return answer


def test_the_lines_logged_during_a_call_name_its_event_step_and_attempt(runtime: Runtime, json_lines: Lines) -> None:
    runtime.register(corrected_seed_services().values(), seed_workflow())
    runtime.answers.update({name: logging_service(name) for name in ("upper", "reverse")})
    event_id = runtime.send("process-text", {"message": "hello"})

    runtime.run(event_id)
    service_log.info("after the run")

    lines = json_lines()
    assert [(line["message"], line.get("event_id"), line.get("step"), line.get("attempt")) for line in lines] == [
        ("calling upper", event_id, "upper", 1),
        ("calling reverse", event_id, "reverse", 1),
        ("after the run", None, None, None),
    ]
    assert {"time", "level", "logger"} <= lines[0].keys() and lines[0]["level"] == "INFO"


def test_an_exception_is_kept_in_its_line(json_lines: Lines) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        service_log.exception("it failed")

    (line,) = json_lines()
    assert line["level"] == "ERROR" and line["message"] == "it failed"
    assert "ValueError: boom" in line["exception"]


def test_a_warning_is_a_line_too(json_lines: Lines) -> None:
    warnings.warn("careful", UserWarning, stacklevel=1)

    (line,) = json_lines()
    assert line["logger"] == "py.warnings" and "UserWarning: careful" in line["message"]
