"""The seed's example, end to end, on the embedded default: no server to start by hand.

Starts the three example services, machinery's API with its in-process
workers on the embedded store, registers ``definitions/`` through the API,
sends ``definitions/event-text.json`` and prints the event once it is over.

    python -m examples.quickstart            # then exits
    python -m examples.quickstart --serve    # and keeps the API and dashboard up
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from examples.services import DEFINITIONS, start_examples
from machinery.api import create_app
from machinery.bootstrap import Config, Machinery


def request(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def register(api: str) -> None:
    """Register (or replace) every service, then every workflow, of ``definitions/``."""
    files = sorted(DEFINITIONS.glob("service-*.json")) + sorted(DEFINITIONS.glob("workflow-*.json"))
    for file in files:
        kind = "services" if file.name.startswith("service-") else "workflows"
        doc = json.loads(file.read_text())
        status, answer = request("POST", f"{api}/{kind}", doc)
        if status == 409:
            status, answer = request("PUT", f"{api}/{kind}/{doc['name']}", doc)
        if status not in (200, 201):
            sys.exit(f"could not register {file.name}: {status} {json.dumps(answer, indent=2)}")
        print(f"registered {kind[:-1]} {doc['name']}")


def send_and_wait(api: str, workflow: str, event: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
    status, ack = request("POST", f"{api}/e/{workflow}", event)
    if status != 202:
        sys.exit(f"the event was refused: {status} {json.dumps(ack, indent=2)}")
    print(f"sent event {ack['event_id']} at {ack['ack_date']}: {ack['status']}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, current = request("GET", f"{api}/events/{ack['event_id']}")
        if current["status"] in ("completed", "failed", "cancelled"):
            return dict(current)
        time.sleep(0.05)
    sys.exit(f"event {ack['event_id']} did not finish within {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8080, help="the API's port (default 8080)")
    parser.add_argument("--serve", action="store_true", help="keep the API and dashboard up afterwards")
    args = parser.parse_args()

    from werkzeug.serving import make_server

    services = start_examples()
    machinery = Machinery(Config.from_env())
    machinery.start_embedded_worker()
    server = make_server("127.0.0.1", args.port, create_app(machinery), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = f"http://127.0.0.1:{args.port}"
    print(f"machinery is up at {api} (data in {machinery.config.data_dir})")

    register(api)
    event = send_and_wait(api, "process-text", json.loads((DEFINITIONS / "event-text.json").read_text()))
    print(json.dumps(event, indent=2))
    if args.serve:
        print(f"the dashboard is at {api}/ and the API docs at {api}/docs; Ctrl-C stops")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    server.shutdown()
    machinery.stop()
    for service in services:
        service.stop()
    sys.exit(0 if event["status"] == "completed" else 1)


if __name__ == "__main__":
    main()
