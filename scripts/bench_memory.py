"""Memory: resident memory of the API and of a worker, with events stored and with events waiting.

What runs where: the three example services in one child process; `machinery
serve` (the API, its workers apart since a broker is set) and `machinery
worker` (prefork, ``--concurrency`` pool processes) on the Redis broker and the
embedded SQLite store in a temporary folder. This process posts the events to
the API over HTTP, with ``--clients`` threads, and reads the resident memory
(RSS) of each process with psutil.

Three readings: once everything has started and run a few events; once
``--events`` events have gone through the example chain; once ``--waiting``
further events wait in a ``wait`` step for a signal that never comes. Their
timeout is under five minutes, so each event's wake-up is a countdown message
that the worker holds in memory until it is due, and the last reading is taken
once the worker holds them all.

    python -m scripts.bench_memory [--events 10000] [--waiting 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests

from machinery.bootstrap import Config, Machinery
from machinery.engine.model import Workflow
from machinery.runtime import MAX_COUNTDOWN
from machinery.validation import WorkflowSchema
from scripts.bench_common import (
    DEFAULT_BROKER,
    SEED_MESSAGE,
    WORKFLOW,
    Children,
    exit_on_sigterm,
    finished_count,
    free_port,
    machinery_env,
    print_machine,
    print_table,
    register_examples,
    start_services,
    start_worker,
    wait_healthy,
    wait_until,
)

HOLD = "hold"
WARMUP = 20
MIB = 2**20


def hold_workflow(timeout: float) -> Workflow:
    """One step waiting ``timeout`` seconds for the signal 'go', which never comes."""
    return WorkflowSchema().load(
        {
            "name": HOLD,
            "inputs": [{"name": "message", "type": "string"}],
            "steps": [{"id": "hold", "kind": "wait", "signal": "go", "timeout": timeout}],
        }
    )


def post_events(api: str, workflow: str, count: int, clients: int) -> None:
    """Post ``count`` events to the API from ``clients`` threads, each with its own session."""
    local = threading.local()

    def post(_: int) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        reply = local.session.post(f"{api}/e/{workflow}", json={"data": {"message": SEED_MESSAGE}}, timeout=30)
        if reply.status_code != 202:
            raise RuntimeError(f"POST /e/{workflow} answered {reply.status_code}: {reply.text[:300]}")

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(post, range(count)))


def run_chain(machinery: Machinery, api: str, count: int, args: argparse.Namespace, children: Children) -> None:
    """Post ``count`` example events to the API and wait until the workers have finished them."""
    workflow_id = machinery.registry.get_workflow(WORKFLOW).id or WORKFLOW
    target = finished_count(machinery.store, workflow_id) + count
    post_events(api, WORKFLOW, count, args.clients)
    wait_until(
        lambda: finished_count(machinery.store, workflow_id) >= target,
        args.timeout,
        f"{count} events",
        interval=0.2,
        check=children.check_alive,
    )


def resident(api: psutil.Process, worker: psutil.Process, data_dir: Path) -> list[float]:
    """MiB: the API (gunicorn's master and its worker process together), the worker's main process, its pool
    processes together, the store's files on disk."""
    server = sum(process.memory_info().rss for process in [api, *api.children(recursive=True)])
    pool = sum(child.memory_info().rss for child in worker.children(recursive=True))
    disk = sum(f.stat().st_size for f in data_dir.iterdir() if f.is_file())
    return [server / MIB, worker.memory_info().rss / MIB, pool / MIB, disk / MIB]


def countdowns_held(machinery: Machinery) -> int:
    """Countdown (ETA) messages the workers hold in memory."""
    scheduled = machinery.celery.control.inspect(timeout=2).scheduled() or {}
    return sum(len(tasks) for tasks in scheduled.values())


def measure(args: argparse.Namespace, children: Children, data_dir: Path) -> dict[str, list[float]]:
    """Start the parts, run the stages, and read the memory after each: the readings by stage."""
    env = machinery_env(data_dir, args.broker, args.concurrency)
    machinery = Machinery(Config.from_env(env))
    try:
        machinery.celery.control.purge()
        register_examples(machinery.registry, start_services(children))
        machinery.registry.add_workflow(hold_workflow(args.wait_timeout))
        worker = start_worker(children, env, args.concurrency)
        port = free_port()
        serve = [sys.executable, "-m", "machinery", "serve", "--port", str(port), "--workers", "1"]
        api_process = children.start("api", serve, env)
        api = f"http://127.0.0.1:{port}"
        wait_healthy(api, 60, children.check_alive)
        processes = psutil.Process(api_process.pid), psutil.Process(worker.pid)
        readings = {}
        run_chain(machinery, api, WARMUP, args, children)
        readings[f"started, {WARMUP} events run"] = resident(*processes, data_dir)
        run_chain(machinery, api, args.events, args, children)
        readings[f"{args.events:,} events stored"] = resident(*processes, data_dir)
        post_events(api, HOLD, args.waiting, args.clients)
        wait_until(
            lambda: countdowns_held(machinery) >= args.waiting,
            args.timeout,
            f"the worker to hold {args.waiting} countdown messages",
            interval=1.0,
            check=children.check_alive,
        )
        readings[f"and {args.waiting:,} events waiting"] = resident(*processes, data_dir)
        # Stopped before the purge: a worker stopping gives back the messages it holds.
        children.stop(worker)
        return readings
    finally:
        machinery.celery.control.purge()
        machinery.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000, help="events through the example chain")
    parser.add_argument("--waiting", type=int, default=1_000, help="events left waiting in a wait step")
    parser.add_argument("--wait-timeout", type=float, default=240.0, help="seconds before a wait times out")
    parser.add_argument("--concurrency", "-c", type=int, default=2, help="pool processes of the worker")
    parser.add_argument("--clients", type=int, default=4, help="threads posting events to the API")
    parser.add_argument("--broker", default=DEFAULT_BROKER, help="Redis URL; its queues are purged")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for each stage")
    parser.add_argument("--logs", type=Path, help="folder for the child processes' logs (default: a temporary one)")
    args = parser.parse_args()
    if args.wait_timeout >= MAX_COUNTDOWN:
        parser.error(f"--wait-timeout must be under {MAX_COUNTDOWN:g} s, or no countdown message is sent")
    exit_on_sigterm()
    print_machine()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp, Children(args.logs or Path(tmp)) as children:
        readings = measure(args, children, Path(tmp) / "data")
    headers = ("stage", "API MiB", "worker main MiB", f"worker pool ({args.concurrency}) MiB", "store on disk MiB")
    print_table("Resident memory (RSS)", headers, [(stage, *values) for stage, values in readings.items()])


if __name__ == "__main__":
    main()
