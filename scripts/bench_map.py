"""Large fan-out: one map step over 1,000, 10,000 and 100,000 items, through real worker processes.

What runs where, on one machine: the example ``upper`` service in a child process (a thread per connection),
standing for a service that does next to nothing; ``machinery worker`` (a prefork pool of ``--concurrency``
processes) on a spare Redis database and the embedded SQLite store in a temporary folder; this process sends
each event with ``Events.submit`` and polls it until it has completed.

An event's time runs from its acceptance to its completion; its items per second are its items over that
time. The worker's CPU time is the user and system time of the worker's processes (its main process and its
pool), from psutil, over the same span, per item: the figure the other processes on the machine change least.
The service's CPU per item is shown beside it, since both share the two cores. A map of 200 items runs first,
not measured, so that the smallest size does not pay for the worker's start.

    python -m scripts.bench_map [--sizes 1000 10000 100000] [--concurrency 4] [--lanes 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis

from machinery.bootstrap import Config, Machinery
from machinery.engine.state import EventStatus
from machinery.validation import ServiceSchema, WorkflowSchema
from scripts.bench_common import (
    Children,
    exit_on_sigterm,
    machinery_env,
    print_machine,
    print_table,
    print_targets,
    start_services,
    start_worker,
    wait_until,
)

SPARE_BROKER = "redis://127.0.0.1:6379/13"
TARGET_ITEMS_PER_S = 1000.0
WARMUP = 200
"""Items of a map run first and not measured, so that the first size does not pay for the worker's start."""
TARGET_GROWTH = 1.5
"""The time per item at the largest size, over the time per item at the smallest, at most."""


@dataclass(frozen=True)
class Run:
    items: int
    seconds: float
    worker_cpu: float
    service_cpu: float

    @property
    def per_second(self) -> float:
        return self.items / self.seconds

    @property
    def ms_per_item(self) -> float:
        return self.seconds / self.items * 1e3

    @property
    def worker_ms_per_item(self) -> float:
        return self.worker_cpu / self.items * 1e3

    @property
    def service_ms_per_item(self) -> float:
        return self.service_cpu / self.items * 1e3


def cpu_seconds(process: psutil.Process) -> float:
    """User and system time of ``process`` and its children, living ones."""
    total = 0.0
    for p in [process, *process.children(recursive=True)]:
        try:
            times = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def register(machinery: Machinery, url: str, lanes: int) -> None:
    text = [{"name": "message", "type": "string"}]
    machinery.registry.add_service(
        ServiceSchema().load({"name": "upper", "address": url, "inputs": text, "outputs": text})
    )
    machinery.registry.add_workflow(
        WorkflowSchema().load(
            {
                "name": "fan",
                "inputs": [{"name": "words", "type": "array", "items": "string"}],
                "steps": [
                    {
                        "id": "each",
                        "kind": "map",
                        "service": "upper",
                        "items": "$.input.words",
                        "item": "message",
                        "concurrency": lanes,
                    }
                ],
            }
        )
    )


def run(machinery: Machinery, size: int, worker: psutil.Process, service: psutil.Process, timeout: float) -> Run:
    words = [f"w{i}" for i in range(size)]
    worker_before, service_before = cpu_seconds(worker), cpu_seconds(service)
    start = time.monotonic()
    event_id = machinery.events.submit("fan", {"words": words})[0].id
    done = wait_until(
        lambda: (e := machinery.events.get(event_id)).status.terminal and e,
        timeout,
        f"the map of {size} items",
        interval=0.2,
    )
    seconds = time.monotonic() - start
    if done.status is not EventStatus.COMPLETED:
        raise RuntimeError(f"the map of {size} items ended {done.status}: {done.error}")
    results = done.steps["each"].outputs or {}
    if results.get("results") != [{"message": w.upper()} for w in words]:
        raise RuntimeError(f"the map of {size} items did not collect every answer in order")
    return Run(size, seconds, cpu_seconds(worker) - worker_before, cpu_seconds(service) - service_before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000], help="items of each map")
    parser.add_argument("--concurrency", "-c", type=int, default=4, help="processes of the worker's pool")
    parser.add_argument("--lanes", type=int, default=16, help="the map step's concurrency")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for each map")
    parser.add_argument("--logs", type=Path, help="folder for the child processes' logs (default: a temporary one)")
    args = parser.parse_args()
    exit_on_sigterm()
    print_machine()
    print(f"worker: prefork pool of {args.concurrency}; map concurrency {args.lanes}; broker {SPARE_BROKER}")
    redis.Redis.from_url(SPARE_BROKER).flushdb()
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-map-") as tmp, Children(args.logs or Path(tmp)) as children:
        env = machinery_env(Path(tmp) / "data", SPARE_BROKER, args.concurrency)
        machinery = Machinery(Config.from_env(env))
        urls = start_services(children)
        register(machinery, urls["upper"], args.lanes)
        worker = psutil.Process(start_worker(children, env, args.concurrency).pid)
        service = psutil.Process(children.started[0].pid)
        run(machinery, WARMUP, worker, service, args.timeout)
        for size in args.sizes:
            runs.append(run(machinery, size, worker, service, args.timeout))
            print(f"  {size} items: {runs[-1].seconds:.1f} s", flush=True)
        machinery.stop()
    redis.Redis.from_url(SPARE_BROKER).flushdb()
    print_table(
        "One map step, by its number of items",
        ("items", "seconds", "items/s", "ms per item", "worker CPU ms per item", "service CPU ms per item"),
        [(r.items, r.seconds, r.per_second, r.ms_per_item, r.worker_ms_per_item, r.service_ms_per_item) for r in runs],
    )
    smallest, largest = runs[0], runs[-1]
    print_targets(
        [
            (f"items/s at {largest.items}", largest.per_second, "items/s", ">=", TARGET_ITEMS_PER_S),
            (
                f"time per item at {largest.items} / at {smallest.items}",
                largest.ms_per_item / smallest.ms_per_item,
                "×",
                "<=",
                TARGET_GROWTH,
            ),
            (
                f"worker CPU per item at {largest.items} / at {smallest.items}",
                largest.worker_ms_per_item / smallest.worker_ms_per_item,
                "×",
                "<=",
                TARGET_GROWTH,
            ),
        ]
    )


if __name__ == "__main__":
    main()
