"""Fleets at 10,000 workloads over three hosts, on this machine: hosting them, and a fleet task over them all.

What runs where, on one machine:

- three host processes, each ``Machinery.start_fleet_host`` (what ``machinery worker --fleets`` runs beside its
  Celery pool), 16 driver threads and a consumer of its own queue (``machinery.host.<name>``) running the fleet
  steps' items there, in 16 threads too;
- one ``machinery worker`` process, a prefork pool of ``--pool`` (2) processes, for the shared queue: it fans
  the task's step out into its items, passes the first item of each lane on to the host holding its workload,
  and runs the sweeper. That is all the shared queue carries here (the hosts run the items and complete the
  step), so one worker of two processes, one per core, is enough on 2 cores: more would only compete with the
  hosts for the CPU;
- this process, which adds the workloads, sends the task's event and watches the store;

all on one embedded SQLite store in a temporary folder and a Redis database of the benchmark's own
(``--broker``, flushed before and after). The fleet uses the ``simulated`` driver, each workload answering its
init, pings and task after ``--latency`` seconds, and pinged every ``--interval`` seconds with 20 % jitter. Its
task ``echo`` takes an int and answers it.

Measured:

- the time from adding the workloads (one bulk write) until every one is ``up``;
- the fleet task: once all are up, ``echo`` run ad hoc on every workload (``Machinery.adhoc.run``, the event of
  the ``bench:echo`` workflow), ``--concurrency`` at once: the time from sending the event until it has
  completed, workloads per second, and whether its outputs hold 10,000 results, none failed and none skipped;
  with the CPU seconds each process spent meanwhile, and over the ``--steady`` seconds after it (the pings alone);
- the ping lag: how late each ping started after it was due (each host records its own, and writes them out
  when it stops), p50 and p99 against the interval: outside the task (mostly the ``--steady`` seconds after
  it), and apart, during it;
- the recovery: one host SIGKILLed, the time until every workload is ``up`` again on the other two. It
  includes the lease that has to lapse first (``--lease`` seconds).

    python -m scripts.bench_fleet [--workloads 10000] [--hosts 3] [--concurrency 200] [--interval 10] [--lease 5]
        [--steady 30] [--logs DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import psutil
import redis

from machinery.bootstrap import Config, Machinery
from machinery.engine.fleets import Fleet, FleetSettings, FleetTask, Workload, WorkloadState
from machinery.engine.model import Field
from machinery.engine.state import EventStatus
from machinery.engine.types import FieldType
from machinery.fleets.adhoc import STEP
from machinery.fleets.host import LAGS_KEPT
from machinery.store.sqlite import SqliteStore
from scripts.bench_common import Children, exit_on_sigterm, machinery_env, print_machine, start_worker

BROKER = "redis://127.0.0.1:6379/9"
N = Field("n", FieldType("int"))
ARGUMENT = 7


class StampedLags(deque[float]):
    """A host's ping lags, each also kept with the time it was taken, so that the task's span can be told apart."""

    def __init__(self) -> None:
        super().__init__(maxlen=LAGS_KEPT)
        self.stamped: deque[tuple[float, float]] = deque(maxlen=LAGS_KEPT)

    def append(self, lag: float) -> None:
        super().append(lag)
        self.stamped.append((time.time(), lag))


def host(name: str, data: Path, broker: str, interval: float, lease: float, lags: Path) -> None:
    """One host, until SIGTERM: then its ping lags, each with its time, written to ``lags``."""
    config = Config(data_dir=data, broker_url=broker, fleet_interval=interval, fleet_lease=lease, fleet_threads=16)
    fleet_host = Machinery(config).start_fleet_host(name)
    stamped = fleet_host.lags = StampedLags()

    def stop(*_: object) -> None:
        lags.write_text(json.dumps(list(stamped.stamped)))
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        time.sleep(1)


def up_on(store: SqliteStore, hosts: set[str]) -> int:
    counts = store.count_workloads("bench")
    return sum(n for (_, held_by, state), n in counts.items() if state == WorkloadState.UP and held_by in hosts)


def wait_all_up(store: SqliteStore, count: int, hosts: set[str], children: Children, timeout: float = 600) -> float:
    start = time.monotonic()
    while up_on(store, hosts) < count:
        if time.monotonic() - start > timeout:
            raise SystemExit(f"not all up after {timeout} s: {store.count_workloads('bench')}")
        children.check_alive()
        time.sleep(0.1)
    return time.monotonic() - start


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` and of its children (a prefork pool), so far."""
    process = psutil.Process(pid)
    total = 0.0
    for p in (process, *process.children(recursive=True)):
        times = p.cpu_times()
        total += times.user + times.system
    return total


def run_task(
    machinery: Machinery, store: SqliteStore, workloads: int, children: Children, timeout: float = 900
) -> tuple[float, float, float]:
    """Run ``echo`` on every workload and wait for its event; its span (wall clock: sent, completed) and the
    seconds from sending to completion, seen by polling. SystemExit if its outputs are not as they should be."""
    sent_at, start = time.time(), time.monotonic()
    event, _ = machinery.adhoc.run("bench", "echo", {N.name: ARGUMENT}, {})
    while not (event := store.get_event(event.id)).status.terminal:
        if time.monotonic() - start > timeout:
            raise SystemExit(f"the task's event has not ended after {timeout} s: {event.steps[STEP]}")
        children.check_alive()
        time.sleep(0.05)
    seconds, done_at = time.monotonic() - start, time.time()
    outputs = event.steps[STEP].outputs or {}
    results, skipped, failed = outputs.get("results", {}), outputs.get("skipped"), outputs.get("failed")
    wrong = [name for name, result in results.items() if result != {N.name: ARGUMENT}]
    if event.status is not EventStatus.COMPLETED or len(results) != workloads or skipped or failed or wrong:
        raise SystemExit(
            f"the task's event ended {event.status.value} with {len(results)} results ({len(wrong)} wrong), "
            f"{len(skipped or [])} skipped, {len(failed or [])} failed: {event.error} {(failed or [])[:3]}"
        )
    return sent_at, done_at, seconds


def describe(lags: list[float]) -> str:
    if len(lags) < 2:
        return f"{len(lags)} pings"
    cuts = statistics.quantiles(lags, n=100)
    return (
        f"{len(lags)} pings: p50 {cuts[49] * 1000:.1f} ms, p99 {cuts[98] * 1000:.1f} ms, max {max(lags) * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", type=int, default=10_000)
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--interval", type=float, default=10.0, help="the fleet's ping interval, in seconds")
    parser.add_argument("--latency", type=float, default=0.005, help="seconds each simulated init, ping and task take")
    parser.add_argument("--lease", type=float, default=5.0, help="MACHINERY_FLEET_LEASE")
    parser.add_argument("--round", type=float, default=1.0, help="MACHINERY_FLEET_INTERVAL")
    parser.add_argument("--steady", type=float, default=30.0, help="seconds of pings measured after the task")
    parser.add_argument("--concurrency", type=int, default=200, help="the task's concurrency: workloads at once")
    parser.add_argument("--pool", type=int, default=2, help="processes of the worker for the shared queue")
    parser.add_argument("--broker", default=BROKER, help="a Redis database of the benchmark's own, flushed")
    parser.add_argument("--logs", type=Path, help="folder for the child processes' logs (default: a temporary one)")
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--lags", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.host:
        host(args.host, args.data, args.broker, args.round, args.lease, args.lags)
        return

    exit_on_sigterm()
    print_machine()
    redis.Redis.from_url(args.broker).flushdb()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as folder, Children(args.logs or Path(folder)) as children:
        data = Path(folder)
        env = {**machinery_env(data, args.broker, args.pool), "PYTHONPATH": str(Path(__file__).parents[1])}
        machinery = Machinery(Config(data_dir=data, broker_url=args.broker))
        store = machinery.store
        assert isinstance(store, SqliteStore)
        settings = FleetSettings(ping_interval=args.interval, ping_jitter=0.2, init_concurrency=32, max_moves=1000)
        echo = FleetTask("echo", (N,), (N,), "Answers its argument", concurrency=args.concurrency)
        store.add_fleet(Fleet("bench", "simulated", settings, (echo,)))
        names = [f"h{i}" for i in range(args.hosts)]
        processes = {}
        for name in names:
            command = [sys.executable, "-m", "scripts.bench_fleet", "--host", name, "--data", str(data)]
            command += ["--lags", str(data / f"{name}.json"), "--round", str(args.round), "--lease", str(args.lease)]
            processes[name] = children.start(f"host-{name}", [*command, "--broker", args.broker], env)
        worker = start_worker(children, env, args.pool)
        while len([h for h in store.list_hosts() if h.alive(time.time())]) < args.hosts:
            children.check_alive()
            time.sleep(0.1)

        config = {"latency": args.latency}
        store.add_workloads([Workload("bench", f"w{i:06d}", config=config) for i in range(args.workloads)])
        all_up = wait_all_up(store, args.workloads, set(names), children)
        loads = {name: up_on(store, {name}) for name in names}
        print(f"{args.workloads} workloads up on {args.hosts} hosts in {all_up:.1f} s: {loads}", flush=True)

        pids = {**{f"host {name}": p.pid for name, p in processes.items()}, "worker": worker.pid}
        cpu_before = {what: cpu_seconds(pid) for what, pid in pids.items()}
        sent_at, done_at, seconds = run_task(machinery, store, args.workloads, children)
        cpu = {what: cpu_seconds(pid) - cpu_before[what] for what, pid in pids.items()}
        print(
            f"task echo on all {args.workloads} (concurrency {args.concurrency}): completed in {seconds:.1f} s from"
            f" sending, {args.workloads / seconds:.0f} workloads/s; {args.workloads} results, none failed, none"
            " skipped",
            flush=True,
        )
        spent = ", ".join(f"{what} {s:.1f}" for what, s in cpu.items())
        print(f"  CPU seconds meanwhile: {spent} (of {2 * seconds:.1f} on 2 cores)", flush=True)

        cpu_before = {what: cpu_seconds(pid) for what, pid in pids.items()}
        time.sleep(args.steady)
        spent = ", ".join(f"{what} {cpu_seconds(pid) - cpu_before[what]:.1f}" for what, pid in pids.items())
        print(f"CPU seconds over the {args.steady:g} s after it, pings only: {spent}", flush=True)
        victim = names[-1]
        processes[victim].kill()
        processes[victim].wait()
        children.started.remove(processes[victim])
        recovery = wait_all_up(store, args.workloads, set(names[:-1]), children)
        print(f"{victim} SIGKILLed: all up again on the others in {recovery:.1f} s (lease {args.lease:g} s)")

        stamped: list[tuple[float, float]] = []
        for name in names[:-1]:
            children.stop(processes[name])
            stamped += [(at, lag) for at, lag in json.loads((data / f"{name}.json").read_text())]
        steady = [lag for at, lag in stamped if not sent_at <= at <= done_at]
        during = [lag for at, lag in stamped if sent_at <= at <= done_at]
        print(f"ping lag (interval {args.interval:g} s), the task apart: {describe(steady)}")
        print(f"ping lag during the task: {describe(during)}")
    redis.Redis.from_url(args.broker).flushdb()


if __name__ == "__main__":
    main()
