"""Intake: events accepted per second over HTTP by the API alone, under gunicorn and under Werkzeug's dev server.

What runs where: the API in child processes, one server at a time, each on a fresh embedded SQLite store in a
temporary folder, with ``MACHINERY_BROKER_URL`` set to a spare Redis database so that no worker runs beside it
(the messages it sends pile up there, and the database is flushed before and after); this process is the load
generator, on loopback: ``--connections`` keep-alive connections on one asyncio loop, each posting the example
event to ``POST /e/process-text`` as soon as the previous answer came, for ``--warmup`` seconds not measured
then ``--seconds`` measured.

- gunicorn: ``machinery serve --workers --threads``, the production server.
- dev server: ``flask --app machinery.api run``, Werkzeug's ``run_simple`` with a thread per connection, what
  ``machinery serve`` ran before.

Each server's CPU is the user and system time of its processes (gunicorn's master and workers) over the
measured seconds, from psutil, as a percentage of one core and per event accepted (the figure that other
processes on the machine change least); the load generator's own is shown beside it, since both share the
machine.

    python -m scripts.bench_intake [--seconds 10] [--connections 32] [--workers 2] [--threads 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis

from examples.services import EXAMPLES
from machinery.bootstrap import Config, Machinery
from scripts.bench_common import (
    SEED_MESSAGE,
    WORKFLOW,
    Children,
    exit_on_sigterm,
    free_port,
    machinery_env,
    percentiles,
    print_machine,
    print_table,
    print_targets,
    register_examples,
    wait_healthy,
)

SPARE_BROKER = "redis://127.0.0.1:6379/12"
TARGET_EVENTS_PER_S = 1000.0
ACCEPTED = 202
_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")
_CLOSE = re.compile(rb"(?i)\r\nconnection:\s*close")


@dataclass(frozen=True)
class Run:
    """One server under load: the answers by status and latencies over the measured seconds, and the CPU used."""

    server: str
    seconds: float
    statuses: Counter[int]
    latencies: list[float]
    server_cpu: float
    client_cpu: float

    @property
    def rate(self) -> float:
        return self.statuses[ACCEPTED] / self.seconds

    def row(self) -> list[object]:
        p50, p95, p99 = (x * 1e3 for x in percentiles(self.latencies))
        errors = sum(count for status, count in self.statuses.items() if status != ACCEPTED)
        cpu = [100 * self.server_cpu / self.seconds, 1e3 * self.server_cpu / max(1, self.statuses[ACCEPTED])]
        return [
            self.server,
            self.statuses[ACCEPTED],
            self.rate,
            p50,
            p95,
            p99,
            errors,
            *cpu,
            100 * self.client_cpu / self.seconds,
        ]


def request_bytes(port: int) -> bytes:
    body = json.dumps({"data": {"message": SEED_MESSAGE}}).encode()
    head = (
        f"POST /e/{WORKFLOW} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _connection(port: int, request: bytes, start: float, stop: float, run: tuple[Counter[int], list[float]]):
    """Post ``request`` on one keep-alive connection until ``stop``; the answers from ``start`` on are counted."""
    statuses, latencies = run
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while (sent := time.perf_counter()) < stop:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = _CONTENT_LENGTH.search(head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            if sent >= start:
                latencies.append(time.perf_counter() - sent)
                statuses[int(head[9:12])] += 1
            if _CLOSE.search(head):
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
    finally:
        writer.close()


async def _load(port: int, connections: int, warmup: float, seconds: float) -> tuple[Counter[int], list[float]]:
    request = request_bytes(port)
    start = time.perf_counter() + warmup
    run: tuple[Counter[int], list[float]] = (Counter(), [])
    await asyncio.gather(*(_connection(port, request, start, start + seconds, run) for _ in range(connections)))
    return run


def cpu_seconds(processes: Sequence[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        times = process.cpu_times()
        total += times.user + times.system
    return total


def measure(name: str, command: list[str], args: argparse.Namespace, children: Children, data_dir: Path) -> Run:
    """Start the server ``command`` (a ``{port}`` in it filled in), load it, stop it: the run."""
    port = free_port()
    env = machinery_env(data_dir, args.broker, 1)
    machinery = Machinery(Config.from_env(env))
    # No service is called: no worker runs.
    register_examples(machinery.registry, dict.fromkeys(EXAMPLES, "http://127.0.0.1:9/event"))
    process = children.start(name.split()[0], [part.format(port=port) for part in command], env)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", 60, children.check_alive)
        server = psutil.Process(process.pid)
        processes = [server, *server.children(recursive=True)]
        client = psutil.Process()
        loop = asyncio.new_event_loop()
        task = loop.create_task(_load(port, args.connections, args.warmup, args.seconds))
        loop.run_until_complete(asyncio.sleep(args.warmup))
        cpu = cpu_seconds(processes), cpu_seconds([client])
        statuses, latencies = loop.run_until_complete(task)
        used = cpu_seconds(processes) - cpu[0], cpu_seconds([client]) - cpu[1]
        loop.close()
    finally:
        children.stop(process)
        machinery.stop()
    return Run(name, args.seconds, statuses, latencies, *used)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds measured for each server")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each measure")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections of the load generator")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn's worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads of each gunicorn worker")
    parser.add_argument("--broker", default=SPARE_BROKER, help="a spare Redis database: it is flushed")
    parser.add_argument("--logs", type=Path, help="folder for the servers' logs (default: a temporary one)")
    args = parser.parse_args()
    exit_on_sigterm()
    print_machine()
    print(f"{args.connections} connections; {args.warmup:g} s warm-up, then {args.seconds:g} s measured per server")
    servers = {
        f"gunicorn ({args.workers} workers x {args.threads} threads)": [
            sys.executable, "-m", "machinery", "serve", "--port", "{port}",
            "--workers", str(args.workers), "--threads", str(args.threads),
        ],
        "dev server (Werkzeug, threaded)": [
            sys.executable, "-m", "flask", "--app", "machinery.api", "run", "--port", "{port}", "--with-threads",
        ],
    }  # fmt: skip
    broker = redis.Redis.from_url(args.broker)
    broker.flushdb()
    runs = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp, Children(args.logs or Path(tmp)) as children:
            for index, (name, command) in enumerate(servers.items()):
                runs.append(measure(name, command, args, children, Path(tmp) / f"data-{index}"))
    finally:
        broker.flushdb()
    headers = (
        "server", "accepted", "events/s", "p50 ms", "p95 ms", "p99 ms", "errors",
        "server CPU %", "server CPU ms/event", "client CPU %",
    )  # fmt: skip
    print_table("Intake: POST /e/<workflow>, the API alone", headers, (run.row() for run in runs))
    print(f"\ngunicorn / dev server, events/s: {runs[0].rate / runs[1].rate:.2f}")
    print_targets([("events accepted per second, gunicorn", runs[0].rate, "events/s", ">=", TARGET_EVENTS_PER_S)])


if __name__ == "__main__":
    main()
