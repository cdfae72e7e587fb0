"""The seed's three example services, on loopback ports.

Each answers ``POST /event`` with ``{"message": ...}``, ``GET /healthcheck``
with 204 and ``GET /infos`` with its own definition from ``definitions/``.

    python -m examples.services            # upper on 5001, reverse on 5002, space-counter on 5003
"""

from __future__ import annotations

import argparse
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DEFINITIONS = Path(__file__).parent / "definitions"

Handler = Callable[[dict[str, Any]], tuple[int, Any]]


class JsonService(ThreadingHTTPServer):
    """A small JSON-over-HTTP/1.1 server (keep-alive) whose ``POST /event`` is ``handle``."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, host: str, port: int, handle: Handler, infos: dict[str, Any] | None = None) -> None:
        super().__init__((host, port), _RequestHandler)
        self.handle_event = handle
        self.infos = infos or {}
        self.thread = threading.Thread(target=self.serve_forever, name=f"service-{port}", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/event"

    def start(self) -> JsonService:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm the second waits for the client's delayed ACK.
    disable_nagle_algorithm = True
    server: JsonService

    def do_GET(self) -> None:
        if self.path == "/healthcheck":
            self._send(204, None)
        elif self.path == "/infos":
            self._send(200, self.server.infos)
        else:
            self._send(404, {"message": f"no route {self.path}"})

    def do_POST(self) -> None:
        if self.path != "/event":
            self._send(404, {"message": f"no route {self.path}"})
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            self._send(400, {"message": "the body is not JSON"})
            return
        status, answer = self.server.handle_event(payload)
        self._send(status, answer)

    def _send(self, status: int, payload: Any) -> None:
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _message(transform: Callable[[str], Any], key: str = "message") -> Handler:
    def handle(payload: dict[str, Any]) -> tuple[int, Any]:
        message = payload.get("message")
        if not isinstance(message, str):
            return 400, {"message": "'message' must be a string"}
        return 200, {key: transform(message)}

    return handle


EXAMPLES: dict[str, tuple[int, Handler]] = {
    "upper": (5001, _message(str.upper)),
    "reverse": (5002, _message(lambda text: text[::-1])),
    "space-counter": (5003, _message(lambda text: text.count(" "), key="space_count")),
}


def start_examples(host: str = "127.0.0.1") -> list[JsonService]:
    """Start the three example services on their ports; each is stopped with ``.stop()``."""
    servers = []
    for name, (port, handle) in EXAMPLES.items():
        infos = json.loads((DEFINITIONS / f"service-{name}.json").read_text())
        servers.append(JsonService(host, port, handle, infos).start())
    return servers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    servers = start_examples(args.host)
    for server in servers:
        print(f"listening on {server.url}")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    main()
