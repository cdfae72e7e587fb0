"""A device with an HTTP API on loopback, as the http driver of fleets expects one: ``GET /ping`` answers 200
while ``healthy`` holds (503 otherwise), ``POST /tasks/<task>`` answers its JSON arguments with the task's name."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Device:
    def __init__(self) -> None:
        self.healthy = True
        self.pings = 0
        device = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                device.pings += 1
                self._answer(200 if device.healthy and self.path == "/ping" else 503, {})

            def do_POST(self) -> None:  # noqa: N802
                args = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                self._answer(200, {"task": self.path.rsplit("/", 1)[-1], **args})

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
