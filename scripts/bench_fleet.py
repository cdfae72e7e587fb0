"""Fleets at 10,000 workloads over three hosts, on this machine.

What runs where: three host processes (each ``Machinery.start_fleet_host``, what ``machinery worker --fleets``
runs beside its Celery pool; no broker is needed for hosting) on one embedded SQLite store in a temporary
folder, and this process, which adds the workloads and watches the store. The fleet uses the ``simulated``
driver, each workload answering its init and pings after ``--latency`` seconds, and pinged every
``--interval`` seconds with 20 % jitter.

Measured:

- the time from adding the workloads (one bulk write) until every one is ``up``;
- the ping lag: how late each ping started after it was due, over ``--steady`` seconds once all are up (each
  host records its own, and writes them out when it stops), p50 and p99 against the interval;
- the recovery: one host SIGKILLed, the time until every workload is ``up`` again on the other two. It
  includes the lease that has to lapse first (``--lease`` seconds).

    python -m scripts.bench_fleet [--workloads 10000] [--hosts 3] [--interval 10] [--lease 5] [--steady 30]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machinery.bootstrap import Config, Machinery
from machinery.engine.fleets import Fleet, FleetSettings, Workload, WorkloadState
from machinery.store.sqlite import SqliteStore

ROOT = Path(__file__).parents[1]


def host(name: str, data: Path, interval: float, lease: float, lags: Path) -> None:
    """One host, until SIGTERM: then its ping lags, written to ``lags``."""
    machinery = Machinery(Config(data_dir=data, fleet_interval=interval, fleet_lease=lease, fleet_threads=16))
    fleet_host = machinery.start_fleet_host(name)

    def stop(*_: object) -> None:
        lags.write_text(json.dumps(list(fleet_host.lags)))
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        time.sleep(1)


def up_on(store: SqliteStore, hosts: set[str]) -> int:
    counts = store.count_workloads("bench")
    return sum(n for (_, held_by, state), n in counts.items() if state == WorkloadState.UP and held_by in hosts)


def wait_all_up(store: SqliteStore, count: int, hosts: set[str], timeout: float = 600) -> float:
    start = time.monotonic()
    while up_on(store, hosts) < count:
        if time.monotonic() - start > timeout:
            raise SystemExit(f"not all up after {timeout} s: {store.count_workloads('bench')}")
        time.sleep(0.1)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", type=int, default=10_000)
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--interval", type=float, default=10.0, help="the fleet's ping interval, in seconds")
    parser.add_argument("--latency", type=float, default=0.005, help="seconds each simulated init and ping take")
    parser.add_argument("--lease", type=float, default=5.0, help="MACHINERY_FLEET_LEASE")
    parser.add_argument("--round", type=float, default=1.0, help="MACHINERY_FLEET_INTERVAL")
    parser.add_argument("--steady", type=float, default=30.0, help="seconds of pings measured once all are up")
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--lags", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.host:
        host(args.host, args.data, args.round, args.lease, args.lags)
        return

    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder)
        store = SqliteStore(data / "machinery.db")
        settings = FleetSettings(ping_interval=args.interval, ping_jitter=0.2, init_concurrency=32, max_moves=1000)
        store.add_fleet(Fleet("bench", "simulated", settings))
        names = [f"h{i}" for i in range(args.hosts)]
        processes = {}
        for name in names:
            command = [sys.executable, "-m", "scripts.bench_fleet", "--host", name, "--data", str(data)]
            command += ["--lags", str(data / f"{name}.json"), "--round", str(args.round), "--lease", str(args.lease)]
            processes[name] = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        while len([h for h in store.list_hosts() if h.alive(time.time())]) < args.hosts:
            time.sleep(0.1)

        config = {"latency": args.latency}
        store.add_workloads([Workload("bench", f"w{i:06d}", config=config) for i in range(args.workloads)])
        all_up = wait_all_up(store, args.workloads, set(names))
        loads = {name: up_on(store, {name}) for name in names}
        print(f"{args.workloads} workloads up on {args.hosts} hosts in {all_up:.1f} s: {loads}", flush=True)

        time.sleep(args.steady)
        victim = names[-1]
        processes[victim].kill()
        processes[victim].wait()
        recovery = wait_all_up(store, args.workloads, set(names[:-1]))
        print(f"{victim} SIGKILLed: all up again on the others in {recovery:.1f} s (lease {args.lease:g} s)")

        lags: list[float] = []
        for name in names[:-1]:
            processes[name].send_signal(signal.SIGTERM)
            processes[name].wait(30)
            lags += json.loads((data / f"{name}.json").read_text())
        cuts = statistics.quantiles(lags, n=100)
        print(
            f"ping lag over {len(lags)} pings (interval {args.interval:g} s):"
            f" p50 {cuts[49] * 1000:.1f} ms, p99 {cuts[98] * 1000:.1f} ms, max {max(lags) * 1000:.1f} ms"
        )


if __name__ == "__main__":
    main()
