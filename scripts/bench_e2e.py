"""End to end, real parts: the three-service example chain through machinery, a plain Celery chain, and the floor.

What runs where, on one machine: the three example services in one child
process (a thread per connection); `machinery worker` (a ``--pool`` of
``--concurrency`` processes, prefork by default) on the Redis broker and the
embedded SQLite store in a temporary folder; the Celery baseline's worker the
same way on the same broker, while machinery's is stopped; this process
submits the events and makes the floor's calls.

- machinery: ``Events.submit`` of the example event to ``process-text``.
- Celery chain: what a user would write instead, one task posting to a
  service with a requests session, chained three times, default settings.
- floor: the same three calls back to back in this process, no broker, no store.

Each system gets a burst (``--events`` sent at once: throughput) and a paced
series (``--paced-events`` at ``--rate`` per second: latency under a moderate
load). A chain's latency runs from its acceptance to the moment its last
service has answered. The services record when each request's handler starts
and ends (keyed by the event and step headers), so a step's overhead is its
window (from the previous step's end, or from acceptance, to its own end) less
its handler's span less the median client and loopback cost of one call,
measured by the floor with the same HTTP client.

    python -m scripts.bench_e2e [--events 2000] [--concurrency 4] [--pool prefork] [--rate 50]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import requests
import urllib3
from celery import Celery, chain

from examples.services import EXAMPLES
from machinery.bootstrap import Config, Machinery
from machinery.engine.state import Event
from scripts.bench_common import (
    DEFAULT_BROKER,
    EVENT_HEADER,
    SEED_MESSAGE,
    STEP_HEADER,
    WORKFLOW,
    Children,
    Span,
    exit_on_sigterm,
    finished_count,
    machinery_env,
    percentiles,
    print_machine,
    print_table,
    print_targets,
    register_examples,
    start_services,
    start_worker,
    take_spans,
    wait_until,
)

STEPS = tuple(EXAMPLES)
BASELINE_QUEUE = "bench-baseline"
BASELINE_TASK = "bench.call"
WARMUP = 50
"""Chains sent, and not measured, before each system's series: every pool process opens its connections."""
TARGET_OVERHEAD_P50_MS = 2.0
TARGET_OVERHEAD_P99_MS = 10.0
TARGET_LATENCY_P50_MS = 15.0
TARGET_THROUGHPUT_RATIO = 1.0

Post = Callable[[str, dict[str, Any], dict[str, str]], dict[str, Any]]


@dataclass(frozen=True)
class Chain:
    """One event or chain as measured: its id (the event header) and when it was accepted, then each step ended."""

    id: str
    bounds: list[float]


@dataclass(frozen=True)
class Sent:
    """A series as sent: when the first chain was sent, how long sending them all took, and the chains once done."""

    start: float
    sending: float
    chains: list[Chain]


@dataclass(frozen=True)
class Series:
    """A series of chains as measured, with the spans the services recorded for them."""

    name: str
    load: str
    sent: Sent
    spans: dict[str, Span]

    @property
    def chains(self) -> list[Chain]:
        return self.sent.chains

    @property
    def send_rate(self) -> float:
        return len(self.chains) / self.sent.sending

    @property
    def wall(self) -> float:
        return max(c.bounds[-1] for c in self.chains) - self.sent.start

    @property
    def throughput(self) -> float:
        return len(self.chains) / self.wall

    def latencies_ms(self) -> list[float]:
        return [(c.bounds[-1] - c.bounds[0]) * 1e3 for c in self.chains]

    def overheads_ms(self, transport: float, steps: slice = slice(None)) -> list[float]:
        """Each step's window, less its handler's span, less ``transport`` seconds; chains missing a span skipped."""
        found = []
        for c in self.chains:
            try:
                spans = [self.spans[f"{c.id}/{step}"] for step in STEPS]
            except KeyError:
                continue
            windows = list(itertools.pairwise(c.bounds))[steps]
            for (start, end), (span_start, span_end) in zip(windows, spans[steps], strict=True):
                found.append((end - start - (span_end - span_start) - transport) * 1e3)
        return found


# Machinery


def machinery_series(
    machinery: Machinery, count: int, rate: float | None, timeout: float, check: Callable[[], None]
) -> Sent:
    """Submit ``count`` events and wait for them."""
    workflow_id = machinery.registry.get_workflow(WORKFLOW).id or WORKFLOW
    target = finished_count(machinery.store, workflow_id) + count
    start = time.time()
    ids = []
    for i in range(count):
        pace(start, i, rate)
        ids.append(machinery.events.submit(WORKFLOW, {"message": SEED_MESSAGE})[0].id)
    sending = time.time() - start
    wait_until(
        lambda: finished_count(machinery.store, workflow_id) >= target,
        timeout,
        f"{count} machinery events",
        interval=0.1,
        check=check,
    )
    events = [machinery.events.get(event_id) for event_id in ids]
    completed = [e for e in events if e.status == "completed"]
    warn_incomplete("machinery events", count - len(completed), [str(e.error) for e in events if e.error][:1])
    return Sent(start, sending, [machinery_chain(e) for e in completed])


def machinery_chain(event: Event) -> Chain:
    """A completed event's acceptance, then when each of its steps ended."""
    ends = [event.steps[step].ended_at for step in STEPS]
    if any(end is None for end in ends):
        raise ValueError(f"event {event.id} is complete but a step has no end")
    return Chain(event.id, [event.created_at, *(end for end in ends if end is not None)])


# The baseline: a plain Celery chain of three tasks, each posting to a service with requests


def baseline_app(broker: str) -> Celery:
    """The Celery app a user would write; its last task records the chain's step ends in a Redis list.

    A task whose call fails records the failure there too, so that the chain is counted rather than waited for.
    """
    app = Celery("bench-baseline", broker=broker, set_as_current=False)
    app.conf.update(
        task_ignore_result=True,
        task_default_queue=BASELINE_QUEUE,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )

    @app.task(name=BASELINE_TASK)
    def call(state: dict[str, Any], url: str, step: str, last: bool = False) -> dict[str, Any]:
        headers = {EVENT_HEADER: state["id"], STEP_HEADER: step}
        try:
            reply = _session().post(url, json={"message": state["message"]}, headers=headers, timeout=5)
            reply.raise_for_status()
        except requests.RequestException as e:
            _redis(broker).rpush(state["done_key"], json.dumps({"id": state["id"], "error": f"{step}: {e}"}))
            raise
        state = {**state, **reply.json(), "ends": [*state["ends"], time.time()]}
        if last:
            _redis(broker).rpush(state["done_key"], json.dumps({"id": state["id"], "bounds": state["ends"]}))
        return state

    return app


_local = threading.local()


def _session() -> requests.Session:
    """This thread's session, made on its first call in a pool process or thread: never shared through fork()."""
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
    session: requests.Session = _local.session
    return session


@functools.cache
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def baseline_series(
    app: Celery, urls: dict[str, str], count: int, rate: float | None, timeout: float, check: Callable[[], None]
) -> Sent:
    """Send ``count`` chains and wait for them."""
    call = app.tasks[BASELINE_TASK]
    done_key = f"bench:done:{uuid.uuid4().hex}"
    done = _redis(app.conf.broker_url)
    start = time.time()
    for i in range(count):
        pace(start, i, rate)
        chain_id = f"celery-{uuid.uuid4().hex}"
        state = {"id": chain_id, "message": SEED_MESSAGE, "ends": [time.time()], "done_key": done_key}
        first, second, last = STEPS
        chain(
            call.s(state, urls[first], first), call.s(urls[second], second), call.s(urls[last], last, True)
        ).apply_async()
    sending = time.time() - start
    try:
        wait_until(lambda: done.llen(done_key) >= count, timeout, f"{count} Celery chains", interval=0.1, check=check)
        records = [json.loads(item) for item in done.lrange(done_key, 0, -1)]
    finally:
        done.delete(done_key)
    failed = [r["error"] for r in records if "error" in r]
    warn_incomplete("Celery chains", len(failed), failed[:1])
    return Sent(start, sending, [Chain(r["id"], r["bounds"]) for r in records if "bounds" in r])


def run_baseline_worker(broker: str, concurrency: int, pool: str) -> None:
    """The baseline's Celery worker, with the same pool as machinery's (this script, run with ``--baseline-worker``)."""
    argv = ["worker", f"--pool={pool}", f"--concurrency={concurrency}", "--loglevel=WARNING", f"-Q{BASELINE_QUEUE}"]
    baseline_app(broker).worker_main(argv)


# The floor: the same three calls back to back in this process


def urllib3_post() -> Post:
    """Posts as machinery's HTTP caller does, through a urllib3 pool."""
    pool = urllib3.PoolManager(retries=False)

    def post(url: str, payload: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        body = json.dumps(payload).encode()
        reply = pool.request("POST", url, body=body, headers={**headers, "Content-Type": "application/json"})
        return json.loads(reply.data)

    return post


def requests_post() -> Post:
    """Posts as the baseline's tasks do, through a requests session."""
    session = requests.Session()

    def post(url: str, payload: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        reply = session.post(url, json=payload, headers=headers, timeout=5)
        reply.raise_for_status()
        return reply.json()

    return post


def floor_series(post: Post, urls: dict[str, str], count: int) -> Sent:
    """``count`` chains of the three calls, back to back."""
    start = time.time()
    chains = []
    for _ in range(count):
        chain_id = f"floor-{uuid.uuid4().hex}"
        bounds = [time.time()]
        message = SEED_MESSAGE
        for step in STEPS:
            answer = post(urls[step], {"message": message}, {EVENT_HEADER: chain_id, STEP_HEADER: step})
            message = answer.get("message", message)
            bounds.append(time.time())
        chains.append(Chain(chain_id, bounds))
    return Sent(start, time.time() - start, chains)


# Measuring and reporting


def pace(start: float, index: int, rate: float | None) -> None:
    """Sleep until send number ``index`` is due at ``rate`` per second from ``start``; at once without a rate."""
    if rate:
        delay = start + index / rate - time.time()
        if delay > 0:
            time.sleep(delay)


def warn_incomplete(what: str, missing: int, examples: Sequence[str] = ()) -> None:
    if missing:
        print(f"warning: {missing} {what} did not complete; they are left out of the figures", *examples, sep="\n  ")


def measured(name: str, load: str, urls: dict[str, str], run: Callable[[], Sent]) -> Series:
    """Run a series, with the spans the services recorded during it (and only those)."""
    take_spans(urls[STEPS[0]])
    sent = run()
    return Series(name, load, sent, take_spans(urls[STEPS[0]]))


def transport_cost(floor: Series) -> float:
    """Median seconds one call takes outside the service's handler (client, loopback, HTTP), in the floor."""
    return percentiles(floor.overheads_ms(0.0))[0] / 1e3


@dataclass(frozen=True)
class System:
    """A system's two series, and the client and loopback cost of one of its calls."""

    transport: float
    burst: Series
    paced: Series


def measure_machinery(
    args: argparse.Namespace, children: Children, data_dir: Path, urls: dict[str, str], transport: float
) -> System:
    env = machinery_env(data_dir, args.broker, args.concurrency)
    machinery = Machinery(Config.from_env(env))
    try:
        machinery.celery.control.purge()
        register_examples(machinery.registry, urls)
        worker = start_worker(children, env, args.concurrency, args.pool)

        def series(count: int, rate: float | None) -> Sent:
            return machinery_series(machinery, count, rate, args.timeout, children.check_alive)

        series(WARMUP, None)
        burst = measured("machinery", "burst", urls, lambda: series(args.events, None))
        paced = measured("machinery", f"paced {args.rate:g}/s", urls, lambda: series(args.paced_events, args.rate))
        children.stop(worker)
    finally:
        machinery.stop()
    return System(transport, burst, paced)


def measure_baseline(args: argparse.Namespace, children: Children, urls: dict[str, str], transport: float) -> System:
    app = baseline_app(args.broker)
    app.control.purge()
    command = [sys.executable, "-m", "scripts.bench_e2e", "--baseline-worker"]
    options = ["--broker", args.broker, "-c", str(args.concurrency), "--pool", args.pool]
    worker = children.start("baseline-worker", [*command, *options])

    def series(count: int, rate: float | None) -> Sent:
        return baseline_series(app, urls, count, rate, args.timeout, children.check_alive)

    series(WARMUP, None)
    burst = measured("Celery chain", "burst", urls, lambda: series(args.events, None))
    paced = measured("Celery chain", f"paced {args.rate:g}/s", urls, lambda: series(args.paced_events, args.rate))
    children.stop(worker)
    return System(transport, burst, paced)


def report(floors: tuple[Series, Series], machinery: System, celery: System) -> None:
    """Figures per series, overhead by step position, ratios, targets."""
    print_figures(floors, (machinery, celery))
    print_positions((machinery, celery))
    floor_urllib3, floor_requests = floors
    ratios = [
        _ratios("machinery / Celery chain", machinery, celery.burst, celery.paced),
        _ratios("machinery / floor (urllib3)", machinery, floor_urllib3, floor_urllib3),
        _ratios("Celery chain / floor (requests)", celery, floor_requests, floor_requests),
    ]
    print_table("Time over time", ("ratio", "time per event, burst", "latency p50, paced"), ratios)
    overhead_p50, overhead_p99 = percentiles(machinery.paced.overheads_ms(machinery.transport), (50, 99))
    throughput = machinery.burst.throughput / celery.burst.throughput
    latency_p50 = percentiles(machinery.paced.latencies_ms())[0]
    print_targets(
        [
            ("overhead per step p50, paced", overhead_p50, "ms", "<=", TARGET_OVERHEAD_P50_MS),
            ("overhead per step p99, paced", overhead_p99, "ms", "<=", TARGET_OVERHEAD_P99_MS),
            ("throughput over the Celery chain's, burst", throughput, "x", ">=", TARGET_THROUGHPUT_RATIO),
            ("latency p50, paced", latency_p50, "ms", "<", TARGET_LATENCY_P50_MS),
        ]
    )


def print_figures(floors: tuple[Series, Series], systems: tuple[System, System]) -> None:
    rows: list[tuple[Any, ...]] = [(*_figures(floor), "", "") for floor in floors]
    for system in systems:
        for series in (system.burst, system.paced):
            rows.append((*_figures(series), *percentiles(series.overheads_ms(system.transport), (50, 99))))
    headers = ("run", "load", "events", "sent/s", "done/s", "latency p50 ms", "p95 ms", "p99 ms")
    overhead = ("overhead/step p50 ms", "p99 ms")
    print_table("The three-step chain, end to end", (*headers, *overhead), rows)


def print_positions(systems: tuple[System, System]) -> None:
    rows = []
    for system in systems:
        for series in (system.burst, system.paced):
            first = percentiles(series.overheads_ms(system.transport, slice(0, 1)), (50, 99))
            later = percentiles(series.overheads_ms(system.transport, slice(1, None)), (50, 99))
            rows.append((series.name, series.load, *first, *later))
    headers = ("run", "load", "step 1 p50 ms", "step 1 p99 ms", "steps 2-3 p50 ms", "steps 2-3 p99 ms")
    print_table("Overhead per step, by position (step 1 includes the first broker hop)", headers, rows)


def _figures(series: Series) -> tuple[Any, ...]:
    figures = (len(series.chains), series.send_rate, series.throughput, *percentiles(series.latencies_ms()))
    return (series.name, series.load, *figures)


def _ratios(name: str, system: System, burst: Series, paced: Series) -> tuple[str, str, str]:
    per_event = burst.throughput / system.burst.throughput
    latency = percentiles(system.paced.latencies_ms())[0] / percentiles(paced.latencies_ms())[0]
    return name, f"{per_event:.2f}", f"{latency:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000, help="events (and floor chains) in each burst")
    parser.add_argument("--paced-events", type=int, default=500, help="events in each paced series")
    parser.add_argument("--rate", type=float, default=50.0, help="events per second in the paced series")
    parser.add_argument("--concurrency", "-c", type=int, default=4, help="pool processes (or threads) of each worker")
    parser.add_argument("--pool", choices=("prefork", "threads"), default="prefork", help="the workers' Celery pool")
    parser.add_argument("--broker", default=DEFAULT_BROKER, help="Redis URL; its queues are purged")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for each series to finish")
    parser.add_argument("--logs", type=Path, help="folder for the child processes' logs (default: a temporary one)")
    parser.add_argument("--baseline-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.broker.startswith("redis"):
        parser.error("--broker must be a Redis URL: the baseline records its chains there")
    if args.baseline_worker:
        run_baseline_worker(args.broker, args.concurrency, args.pool)
        return
    exit_on_sigterm()
    print_machine()
    print(f"each worker: {args.pool} pool of {args.concurrency}; broker {args.broker}")
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp, Children(args.logs or Path(tmp)) as children:
        urls = start_services(children)
        floors = (
            measured("floor (urllib3)", "sequential", urls, lambda: floor_series(urllib3_post(), urls, args.events)),
            measured("floor (requests)", "sequential", urls, lambda: floor_series(requests_post(), urls, args.events)),
        )
        transports = [transport_cost(floor) for floor in floors]
        machinery = measure_machinery(args, children, Path(tmp) / "data", urls, transports[0])
        celery = measure_baseline(args, children, urls, transports[1])
    spans = [b - a for series in (machinery.paced, celery.paced) for a, b in series.spans.values()]
    print(
        f"service handler p50 {percentiles(spans)[0] * 1e3:.2f} ms; client and loopback per call (floor median):"
        f" urllib3 {transports[0] * 1e3:.2f} ms, requests {transports[1] * 1e3:.2f} ms"
    )
    report(floors, machinery, celery)


if __name__ == "__main__":
    main()
