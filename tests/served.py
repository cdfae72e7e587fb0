"""A real ``machinery serve`` on loopback, and the example services beside it, for the client and remote CLI tests.

The server runs this checkout's code (``python -m machinery`` from the repository's root) with its workers in
its own process: no broker. The example services listen on free ports, so that suites running side by side
do not collide on 5001-5003, and their definitions are written with those ports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import requests

from examples.services import DEFINITIONS, EXAMPLES, JsonService
from tests.support import free_port, wait_for

ROOT = Path(__file__).parents[1]

ADMIN = "admin-token"
READER = "reader-token"
TOKENS = f"admin:{ADMIN},reader:{READER}"


@contextmanager
def machinery_serve(
    data_dir: Path,
    tokens: str | None = None,
    settings: Mapping[str, str] | None = None,
    options: Sequence[str] = (),
) -> Iterator[str]:
    """The base URL of ``machinery serve`` on a free port, storing in ``data_dir``, with ``settings`` in its
    environment, up until the block ends."""
    port = free_port()
    env = {**os.environ, "MACHINERY_DATA_DIR": str(data_dir), "MACHINERY_HEALTH_INTERVAL": "0", **(settings or {})}
    for name in ("MACHINERY_BROKER_URL", "MACHINERY_MONGO_URI", "MACHINERY_API_TOKENS", "MACHINERY_URL"):
        env.pop(name, None)
    if tokens:
        env["MACHINERY_API_TOKENS"] = tokens
    data_dir.mkdir(parents=True, exist_ok=True)
    log = (data_dir / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "machinery", "serve", "--port", str(port), "--threads", "4", *options],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: server.poll() is not None or _healthy(url), timeout=60, what="machinery serve to answer")
        assert server.poll() is None, (data_dir / "serve.log").read_text()
        yield url
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@contextmanager
def example_services(out: Path) -> Iterator[Path]:
    """``out``, holding the example definitions, each service's address a running example on a free port."""
    out.mkdir(parents=True, exist_ok=True)
    servers = []
    try:
        for name, (_, handle) in EXAMPLES.items():
            servers.append(server := JsonService("127.0.0.1", free_port(), handle).start())
            doc = json.loads((DEFINITIONS / f"service-{name}.json").read_text())
            (out / f"service-{name}.json").write_text(json.dumps(doc | {"address": server.url}))
        for file in DEFINITIONS.glob("workflow-*.json"):
            (out / file.name).write_text(file.read_text())
        yield out
    finally:
        for server in servers:
            server.stop()


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthcheck", timeout=1).status_code == 204
    except requests.RequestException:
        return False
