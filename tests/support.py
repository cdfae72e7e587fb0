"""Helpers the test packages share: polling, free ports and scriptable HTTP services."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from examples.services import Handler, JsonService
from machinery.engine.state import Event
from machinery.runtime import Events

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or probe}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class ScriptedService:
    """An HTTP service on loopback whose answers the test decides, call by call.

    ``script`` is a list of answers used in order (the last one repeats): each
    is ``(status, body)`` or a callable taking the request's JSON and returning one.
    ``calls`` records every request body received.
    """

    def __init__(self, script: list[Any], port: int | None = None) -> None:
        self.script = script
        self.calls: list[dict[str, Any]] = []
        self.port = port or free_port()
        self._lock = threading.Lock()
        self.server: JsonService | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/event"

    def start(self) -> ScriptedService:
        self.server = JsonService("127.0.0.1", self.port, self._handle).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def _handle(self, payload: dict[str, Any]) -> tuple[int, Any]:
        with self._lock:
            index = min(len(self.calls), len(self.script) - 1)
            self.calls.append(payload)
        answer = self.script[index]
        return answer(payload) if callable(answer) else answer


def slow(seconds: float, answer: tuple[int, Any] | Handler) -> Handler:
    """An answer given after ``seconds``."""

    def handle(payload: dict[str, Any]) -> tuple[int, Any]:
        time.sleep(seconds)
        return answer(payload) if callable(answer) else answer

    return handle


def finished(events: Events, event_id: str, timeout: float = 30.0) -> Event:
    """The event once it has reached a final status."""
    return wait_for(
        lambda: (e := events.get(event_id)).status.terminal and e,
        timeout=timeout,
        what=f"event {event_id} to finish",
    )


class CallbackService:
    """A callback service on loopback: it answers 202 and hands the callback URL to ``then`` on another thread."""

    def __init__(self, then: Callable[[str, dict[str, Any]], None]) -> None:
        self.callbacks: list[str] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                url = self.headers["X-Machinery-Callback"]
                service.callbacks.append(url)
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()
                threading.Thread(target=then, args=(url, payload), daemon=True).start()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/event"

    def stop(self) -> None:
        self.server.shutdown()
