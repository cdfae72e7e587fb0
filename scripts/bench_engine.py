"""The engine alone: gorchestrator's 8-node graph of no-op nodes, decided and advanced, no I/O.

Three ways, each timed per graph run (the event accepted, its 8 steps claimed
and finished, the event completed):

- decider: the pure transitions (accept, claim, finish), no store, no runtime;
- SQLite: the runtime (Events.submit, Runner.run) on the embedded store, in a temporary folder;
- mongomock: the same runtime on the MongoDB store, over mongomock (its test double).

The package's stubs stand for the services and the broker: a caller answering
every call at once with no outputs, and a dispatcher whose in-memory queue is
drained in order: what is left is the engine and its store.

    python -m scripts.bench_engine [--rounds 9] [--runs 300] [--store-runs 60]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mongomock

from machinery.cel import CelExpressions
from machinery.engine import decider
from machinery.engine.model import HttpEndpoint, Service, Step, Workflow
from machinery.engine.plan import Plan, Settings
from machinery.engine.ports import Store
from machinery.engine.state import Event
from machinery.registry import Registry
from machinery.runtime import Events, Plans, Runner, ServiceCache
from machinery.store.mongo import MongoStore
from machinery.store.sqlite import SqliteStore
from machinery.stubs import StubCaller, StubDispatcher
from scripts.bench_common import exit_on_sigterm, percentiles, print_machine, print_table, print_targets

EDGES = (("a", "b"), ("a", "e"), ("b", "g"), ("d", "c"), ("d", "g"), ("f", "a"), ("f", "b"), ("f", "c"), ("h", "g"))
"""gorchestrator's benchmark graph: (x, y) means y runs after x."""
NODES = "abcdefgh"
TRANSITIONS = 1 + 2 * len(NODES)
"""Per graph run: the event accepted, then each node claimed and finished."""
SEED_US = 981.0
"""gorchestrator's figure for one run of this graph, on a small laptop."""
TARGET_US = 100.0
NOOP = Service(name="noop", endpoint=HttpEndpoint("http://127.0.0.1:9/noop"))


def graph() -> Workflow:
    steps = tuple(Step(id=node, service=NOOP.name, after=tuple(x for x, y in EDGES if y == node)) for node in NODES)
    return Workflow(name="gorchestrator-8", steps=steps)


def decider_run(plan: Plan, services: dict[str, Service], settings: Settings, ids: Iterator[int]) -> None:
    """One graph run through the pure transitions: accept, then claim and finish each ready step in turn.

    Ids and claim tokens come from the counter ``ids``, so that making them costs next to nothing.
    """
    now = time.time()
    event = decider.accept(plan, {}, event_id=str(next(ids)), now=now, settings=settings)
    while ready := decider.ready_units(event):
        claimed = decider.claim(plan, services, event, ready[0], now=now, token=str(next(ids)), settings=settings)
        if claimed is None or claimed[1] is None:
            raise RuntimeError(f"{ready[0]} could not be claimed")
        finished = decider.finish(plan, claimed[0], claimed[1], outputs={}, now=now, random=0.5, settings=settings)
        if finished is None:
            raise RuntimeError(f"{ready[0]} could not be finished")
        event = finished
    check_completed(event)


def runtime_run(store: Store, settings: Settings) -> Callable[[], None]:
    """One graph run through the runtime on ``store``: submit, then run every message until none is left."""
    workflow = graph()
    expressions = CelExpressions()
    registry = Registry(store, expressions)
    registry.add_service(NOOP)
    registry.add_workflow(workflow)
    dispatcher = StubDispatcher()
    plans = Plans(store, expressions)
    events = Events(store, store, dispatcher, settings, plans)
    runner = Runner(store, dispatcher, {NOOP.kind: StubCaller(lambda call: {})}, settings, plans, ServiceCache(store))

    def run() -> None:
        event, _ = events.submit(workflow.name, {})
        dispatcher.drain(runner)
        check_completed(store.get_event(event.id))

    return run


def check_completed(event: Event) -> None:
    if event.status != "completed":
        raise RuntimeError(f"the graph ended {event.status}: {event.error}")


def timed(run: Callable[[], None], runs: int) -> list[float]:
    """Microseconds of each of ``runs`` calls of ``run``."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) * 1e6)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300, help="timed graph runs of the pure decider, per round")
    parser.add_argument("--store-runs", type=int, default=60, help="timed graph runs with each store, per round")
    parser.add_argument(
        "--rounds", type=int, default=9, help="rounds, each engine in turn (stores empty at each), sharing the noise"
    )
    parser.add_argument("--warmup", type=int, default=20, help="untimed graph runs before each round")
    args = parser.parse_args()
    exit_on_sigterm()
    print_machine()
    settings = Settings()
    plan = Plan.of(graph(), CelExpressions())
    services, ids = {NOOP.name: NOOP}, itertools.count()
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        engines: dict[str, tuple[Callable[[int], Callable[[], None]], int]] = {
            "decider (no store)": (lambda _: lambda: decider_run(plan, services, settings, ids), args.runs),
            "runtime + SQLite (tmp file)": (
                lambda r: runtime_run(SqliteStore(Path(tmp) / f"round-{r}.db"), settings),
                args.store_runs,
            ),
            "runtime + MongoDB (mongomock)": (
                lambda _: runtime_run(MongoStore(mongomock.MongoClient().db), settings),
                args.store_runs,
            ),
        }
        rounds: dict[str, list[list[float]]] = {name: [] for name in engines}
        for r in range(args.rounds):
            for name, (make, runs) in engines.items():
                run = make(r)
                timed(run, args.warmup)
                rounds[name].append(timed(run, runs))

    rows: list[tuple[Any, ...]] = []
    for name, samples in rounds.items():
        medians = [statistics.median(r) for r in samples]
        p50, everything = statistics.median(medians), [x for r in samples for x in r]
        spread = f"{min(medians):.0f}-{max(medians):.0f}"
        rows.append((name, len(everything), p50, spread, percentiles(everything, (99,))[0], p50 / TRANSITIONS))
    rows.append(("gorchestrator (Go), as published", "", SEED_US, "", "", SEED_US / TRANSITIONS))
    headers = ("engine", "graph runs", "p50 µs", "round p50s µs", "p99 µs", f"p50 µs / transition (÷{TRANSITIONS})")
    print_table("One run of the 8-node graph (no-op nodes); p50 is the median of the rounds' medians", headers, rows)
    decider_p50 = statistics.median(statistics.median(r) for r in rounds["decider (no store)"])
    print_targets([("engine alone, p50 per graph run", decider_p50, "µs", "<", TARGET_US)])


if __name__ == "__main__":
    main()
