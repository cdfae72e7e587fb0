"""Helpers the benchmark scripts share: statistics, tables, child processes, the example services.

Run from the repository root as ``python -m scripts.bench_<name>``. The example
services run in a child process of their own (``python -m scripts.bench_common
serve PORT PORT PORT``), so that their threads never compete with the measuring
process for its GIL.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import operator
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import psutil
import urllib3
from tabulate import tabulate

from examples.services import DEFINITIONS, EXAMPLES, Handler, JsonService, _RequestHandler
from machinery.engine.ports import EventStore
from machinery.registry import Registry
from machinery.validation import ServiceSchema, WorkflowSchema

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = "process-text"
SEED_MESSAGE = "The Sun will rise in the morning !"
DEFAULT_BROKER = "redis://127.0.0.1:6379/14"
EVENT_HEADER = "X-Machinery-Event"
STEP_HEADER = "X-Machinery-Step"
SPANS_PATH = "/spans"

Span = tuple[float, float]


# Figures and tables


def percentiles(values: Sequence[float], points: Sequence[int] = (50, 95, 99)) -> list[float]:
    """The given percentiles of ``values`` (inclusive method); NaN for each when there are fewer than two."""
    if len(values) < 2:
        return [float("nan")] * len(points)
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return [cuts[p - 1] for p in points]


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A titled GitHub-flavoured Markdown table on stdout, numbers with up to two decimals."""
    print(f"\n### {title}\n")
    print(tabulate(list(rows), headers=list(headers), tablefmt="github", floatfmt=".2f"))


def print_targets(rows: Iterable[tuple[str, float, str, str, float]]) -> None:
    """The targets table; each row is (figure, measured, unit, comparison, limit), comparison one of < <= >=."""
    compare = {"<": operator.lt, "<=": operator.le, ">=": operator.ge}
    table = [
        (figure, f"{value:.2f} {unit}", f"{op} {limit:g} {unit}", "met" if compare[op](value, limit) else "**missed**")
        for figure, value, unit, op, limit in rows
    ]
    print_table("Targets", ("figure", "measured", "target", ""), table)


def print_machine() -> None:
    """When and where the figures were taken."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor() or "unknown CPU",
    )
    memory = psutil.virtual_memory().total / 2**30
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{now}; {os.cpu_count()} cores ({cpu}), {memory:.0f} GiB; Python {platform.python_version()}; load {load}")


# Waiting and processes


def wait_until(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.05,
    check: Callable[[], None] | None = None,
) -> T:
    """Poll ``probe`` until it returns something truthy; TimeoutError after ``timeout`` seconds.

    ``check``, called before each poll, may raise to give up early (a child process died, say).
    """
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so that ``with`` blocks stop children and remove files as on Ctrl-C."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


class Children:
    """Child processes, each in a process group of its own, all stopped (with their own children) on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, command: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``command`` from the repository root, its output to ``<log_dir>/<name>.log``."""
        with (self.log_dir / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        _stop_group(process)
        self.started.remove(process)

    def check_alive(self) -> None:
        """RuntimeError naming the log of any child that has exited."""
        for process in self.started:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args!r} exited with {process.returncode}; see the logs in {self.log_dir}")

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        for process in reversed(self.started):
            _stop_group(process)


def _stop_group(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM to the process's group, then SIGKILL if it has not exited within ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Machinery


def machinery_env(data_dir: Path, broker: str, concurrency: int) -> dict[str, str]:
    """The environment of a machinery process using the embedded store in ``data_dir`` and ``broker``."""
    return {
        **os.environ,
        "MACHINERY_DATA_DIR": str(data_dir),
        "MACHINERY_BROKER_URL": broker,
        "MACHINERY_CONCURRENCY": str(concurrency),
    }


def start_worker(
    children: Children, env: dict[str, str], concurrency: int, pool: str = "prefork"
) -> subprocess.Popen[bytes]:
    """A `machinery worker` process with a pool of ``concurrency`` processes (or threads)."""
    options = [f"--concurrency={concurrency}", f"--pool={pool}", "--loglevel=WARNING"]
    return children.start("machinery-worker", [sys.executable, "-m", "machinery", "worker", *options], env)


def register_examples(registry: Registry, urls: dict[str, str]) -> None:
    """The example services at ``urls`` (by name) and the workflow chaining them."""
    for name, url in urls.items():
        service = ServiceSchema().load(json.loads((DEFINITIONS / f"service-{name}.json").read_text()))
        registry.add_service(replace(service, endpoint=replace(service.endpoint, address=url)))
    registry.add_workflow(WorkflowSchema().load(json.loads((DEFINITIONS / f"workflow-{WORKFLOW}.json").read_text())))


def finished_count(store: EventStore, workflow_id: str) -> int:
    """Events of the workflow that have completed or failed."""
    return sum(
        store.list_events(workflow_id=workflow_id, status=status, offset=0, limit=1).total
        for status in ("completed", "failed")
    )


# The example services, timed


def wait_healthy(base_url: str, timeout: float, check: Callable[[], None] | None = None) -> None:
    """Wait until ``GET <base_url>/healthcheck`` answers 204."""
    pool = urllib3.PoolManager(retries=False)

    def healthy() -> bool:
        try:
            return pool.request("GET", f"{base_url}/healthcheck", timeout=1).status == 204
        except urllib3.exceptions.HTTPError:
            return False

    wait_until(healthy, timeout, f"{base_url} to answer", interval=0.1, check=check)


def start_services(children: Children, timeout: float = 30.0) -> dict[str, str]:
    """The example services in a child process on free ports; their ``POST /event`` URLs by name."""
    ports = {name: free_port() for name in EXAMPLES}
    children.start("services", [sys.executable, "-m", "scripts.bench_common", "serve", *map(str, ports.values())])
    for port in ports.values():
        wait_healthy(f"http://127.0.0.1:{port}", timeout, children.check_alive)
    return {name: f"http://127.0.0.1:{port}/event" for name, port in ports.items()}


def take_spans(url: str) -> dict[str, Span]:
    """The handler spans the services recorded since the last call, keyed ``<event>/<step>``; then forgotten."""
    response = urllib3.request("GET", url.replace("/event", SPANS_PATH), timeout=30)
    return {key: (start, end) for key, (start, end) in json.loads(response.data).items()}


class _TimedHandler(_RequestHandler):
    """The example request handler, recording when each ``POST /event`` starts and ends, by event and step.

    It also turns Nagle's algorithm off (TCP_NODELAY): the example handler writes an answer's headers and body
    in two sends, and with Nagle on the body waits for the client's delayed ACK, about 40 ms on Linux.
    """

    server: _TimedService
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        start = time.time()
        super().do_POST()
        key = f"{self.headers.get(EVENT_HEADER)}/{self.headers.get(STEP_HEADER)}"
        self.server.spans[key] = (start, time.time())

    def do_GET(self) -> None:
        if self.path != SPANS_PATH:
            super().do_GET()
            return
        spans = self.server.spans.copy()
        self.server.spans.clear()
        self._send(200, spans)


class _TimedService(JsonService):
    def __init__(self, port: int, handle: Handler, spans: dict[str, Span]) -> None:
        super().__init__("127.0.0.1", port, handle)
        self.RequestHandlerClass = _TimedHandler
        self.spans = spans


def serve(ports: Sequence[int]) -> None:
    """Serve the example services on ``ports``, in the order of ``EXAMPLES``, until terminated."""
    spans: dict[str, Span] = {}
    for (_, handle), port in zip(EXAMPLES.values(), ports, strict=True):
        _TimedService(port, handle, spans).start()
    threading.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the example services, timed (started by the benchmarks).")
    parser.add_argument("role", choices=["serve"])
    parser.add_argument("ports", nargs=len(EXAMPLES), type=int, help="one port per example service")
    serve(parser.parse_args().ports)


if __name__ == "__main__":
    main()
