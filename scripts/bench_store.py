"""Reads as the store grows: GET /events and /metrics on 10,000, 100,000 and 1,000,000 events.

What runs where: everything in this process. The API (a Flask test client, no HTTP server: what is measured is
the view, its store queries and the JSON it writes) runs on the embedded SQLite store in a temporary folder,
with two workflows registered through it: ``orders`` (``process-text`` with two more inputs, ``order_id``
declared searchable and ``customer`` not) and ``process-text``. One event is sent through the API; the store is
then filled with copies of it, written straight into the events table with ``executemany`` in transactions of
100,000 (not over HTTP: a million through the API would take minutes), each with its own id, creation time
(1 ms apart), workflow (4 in 5 of ``orders``), status (80 % completed, 10 % failed, 5 % running, 5 % accepted)
and data (``order_id`` ``A-<n>``, ``customer`` one of 1,000). The counters' triggers and every index run as for
any write. The same store grows from one size to the next, so each is measured on the one before plus the new
events.

At each size, the median of ``--repeats`` requests (3 for the search on an undeclared field, which is bounded
in time) of, pages of 10 events:

- the first page and the 500th of each filter combination: none, ``workflow=orders``, ``status=completed``,
  both. The 500th by ``cursor``, the X-Next-Cursor of the 499th (taken once by ``page=499``, not measured);
  then the 500th by ``page=500``, the way kept for compatibility, which reads past the 4,990 events before it;
- a search on the searchable field, ``data={"order_id": ...}`` of an event half-way through the store;
- a search on an undeclared field for a value no event holds, ``data={"customer": "nobody"}``: it reads every
  event until its time runs out (one second), and answers ``"complete": false``;
- a scrape of ``/metrics``.

MongoDB: through mongomock only, for correctness, never for time (mongomock runs every query in Python, by
reading each document): with ``--mongo``, the first 2,000 of the same rows go into a MongoStore on mongomock
and into a SQLite store of their own, and three pages of each listing above (by cursor), the search and the
statistics must give the same events and counts on both.

    python -m scripts.bench_store [--sizes 10000 100000 1000000] [--repeats 25] [--mongo]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import mongomock
import orjson
from flask.testing import FlaskClient

from examples.services import DEFINITIONS
from machinery.api import create_app
from machinery.bootstrap import Config, Machinery
from machinery.engine.state import Event
from machinery.store.mongo import MongoStore
from machinery.store.sqlite import _INSERT_EVENT, SqliteStore
from scripts.bench_common import print_machine, print_table, print_targets

FILTERS = {"none": {}, "workflow": {"workflow": "orders"}, "status": {"status": "completed"}}
FILTERS["both"] = FILTERS["workflow"] | FILTERS["status"]
STATUSES = ["completed"] * 16 + ["failed"] * 2 + ["running", "accepted"]
PAGE = 10
DEEP = 500
BATCH = 100_000
MONGO_EVENTS = 2_000
LISTING_MS = 20.0
SCRAPE_MS = 10.0
GROWTH = 2.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--mongo", action="store_true", help="check MongoStore (on mongomock) against SQLite")
    args = parser.parse_args(argv)
    print_machine()
    with tempfile.TemporaryDirectory(prefix="bench-store-") as folder:
        machinery = Machinery(Config.from_env({"MACHINERY_DATA_DIR": folder}))
        try:
            results = measure(machinery, Path(folder), args)
        finally:
            machinery.stop()
    report(results, args.sizes)
    return 0


def measure(machinery: Machinery, folder: Path, args: argparse.Namespace) -> dict[int, dict[str, float]]:
    client = create_app(machinery, {"TESTING": True}).test_client()
    register(client)
    template = client.post("/e/orders", json={"data": {"message": "hi", "order_id": "A-0", "customer": "c-0"}}).json
    store = machinery.store
    assert isinstance(store, SqliteStore)
    doc = orjson.loads(
        store._db().execute("SELECT doc FROM events WHERE id = ?", (template["event_id"],)).fetchone()[0]
    )
    workflow_ids = {w: client.get(f"/workflows/{w}").json["id"] for w in ("orders", "process-text")}
    results: dict[int, dict[str, float]] = {}
    stored = 1
    for size in args.sizes:
        started = time.perf_counter()
        fill(store, doc, workflow_ids, stored, size)
        seconds = time.perf_counter() - started
        disk = sum(f.stat().st_size for f in folder.glob("*.db*")) / 2**20
        print(
            f"filled to {size:,} events: {size - stored:,} in {seconds:.1f} s, {disk:.0f} MB on disk", file=sys.stderr
        )
        stored = size
        results[size] = timings(client, size, args.repeats)
        if args.mongo and size == args.sizes[0]:
            check_mongo(store, doc, workflow_ids, folder)
    return results


def register(client: FlaskClient) -> None:
    for name in ("upper", "reverse", "space-counter"):
        assert client.post("/services", json=read(f"service-{name}.json")).status_code == 201
    process_text = read("workflow-process-text.json")
    orders = process_text | {"name": "orders"}
    orders["inputs"] = [
        *process_text["inputs"],
        {"name": "order_id", "type": "string", "required": False, "searchable": True},
        {"name": "customer", "type": "string", "required": False},
    ]
    for workflow in (process_text, orders):
        response = client.post("/workflows", json=workflow)
        assert response.status_code == 201, response.json


def read(name: str) -> Any:
    return json.loads((DEFINITIONS / name).read_text())


def rows(doc: dict[str, Any], workflow_ids: dict[str, str], start: int, end: int) -> Iterator[tuple[Any, ...]]:
    """Rows of the events table, the ``start``-th to the ``end``-th event, copies of ``doc``."""
    base = doc["created_at"]
    for n in range(start, end):
        workflow_id = workflow_ids["orders" if n % 5 else "process-text"]
        status = STATUSES[(n * 7) % len(STATUSES)]
        data = {"message": "hi", "order_id": f"A-{n}", "customer": f"c-{n % 1000}"}
        event_id = f"{n:032x}"
        created_at = base + n / 1000
        copy = doc | {"id": event_id, "workflow_id": workflow_id, "status": status, "created_at": created_at}
        copy |= {"updated_at": created_at, "data": data}
        yield event_id, workflow_id, status, created_at, None, None, 0, orjson.dumps(copy).decode()


def fill(store: SqliteStore, doc: dict[str, Any], workflow_ids: dict[str, str], start: int, end: int) -> None:
    for batch in range(start, end, BATCH):
        chunk = list(rows(doc, workflow_ids, batch, min(batch + BATCH, end)))
        with store._transaction() as db:
            db.executemany(_INSERT_EVENT, chunk)


def timings(client: FlaskClient, size: int, repeats: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    for name, query in FILTERS.items():
        figures[f"{name}: first page"] = median_ms(
            lambda q=query: get(client, "/events", q | {"page_size": PAGE}), repeats
        )
        before = client.get("/events", query_string=query | {"page_size": PAGE, "page": DEEP - 1})
        cursor = before.headers["X-Next-Cursor"]
        deep = query | {"page_size": PAGE, "cursor": cursor}
        figures[f"{name}: page {DEEP} by cursor"] = median_ms(lambda q=deep: get(client, "/events", q), repeats)
        numbered = query | {"page_size": PAGE, "page": DEEP}
        figures[f"{name}: page {DEEP} by number"] = median_ms(lambda q=numbered: get(client, "/events", q), repeats)
    order = {"data": json.dumps({"order_id": f"A-{size // 2 + 1}"})}
    figures["search, searchable field"] = median_ms(lambda: get(client, "/events", order, found=1), repeats)
    nobody = {"data": json.dumps({"customer": "nobody"})}
    figures["search, undeclared field"] = median_ms(lambda: get(client, "/events", nobody, found=0), 3)
    pagination = json.loads(client.get("/events", query_string=nobody).headers["X-Pagination"])
    print(f"{size:,}: the undeclared search answered {pagination}", file=sys.stderr)
    figures["metrics scrape"] = median_ms(lambda: get(client, "/metrics", {}), repeats)
    return figures


def get(client: FlaskClient, path: str, query: dict[str, Any], found: int | None = None) -> None:
    response = client.get(path, query_string=query)
    assert response.status_code == 200, response.data
    assert found is None or len(response.json) == found, response.json
    if path == "/events" and found is None:
        assert len(response.json) == PAGE, (query, len(response.json))


def median_ms(request: Callable[[], None], repeats: int) -> float:
    request()  # warm: the statement cache, the pages of the file
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        request()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def check_mongo(main: SqliteStore, doc: dict[str, Any], workflow_ids: dict[str, str], folder: Path) -> None:
    """The first MONGO_EVENTS events, in a MongoStore on mongomock and in a SQLite store of their own, give the
    same listings, search and counts. Fewer than the smallest size: mongomock checks a unique index by reading
    every document, so its inserts take quadratic time."""
    sqlite = SqliteStore(folder / "mongo-check.db")
    mongo = MongoStore(mongomock.MongoClient().machinery)
    for store in (sqlite, mongo):
        for name in ("upper", "reverse", "space-counter"):
            store.add_service(main.get_service(name))
        for workflow in main.list_workflows(offset=0, limit=10).items:
            store.add_workflow(workflow, services=dict.fromkeys(workflow.service_names, 1))
    events = list(rows(doc, workflow_ids, 0, MONGO_EVENTS))
    with sqlite._transaction() as db:
        db.executemany(_INSERT_EVENT, events)
    mongo._events.insert_many(
        [{("_id" if k == "id" else k): v for k, v in orjson.loads(e[-1]).items()} for e in events]
    )
    mongo.recount_events()  # the counters of events written around the store, as after an upgrade
    for query in FILTERS.values():
        filters = {"workflow_id": workflow_ids.get(query.get("workflow", "")), "status": query.get("status")}
        after = None
        for _ in range(3):
            pages = [store.list_events(**filters, offset=0, limit=PAGE, after=after) for store in (sqlite, mongo)]
            assert [e.id for e in pages[0].items] == [e.id for e in pages[1].items], query
            assert pages[0].total == pages[1].total, query
            last: Event = pages[0].items[-1]
            after = (last.created_at, last.id)
    search = {"order_id": "A-77"}
    found = [s.list_events(workflow_id=None, status=None, offset=0, limit=PAGE, data=search) for s in (sqlite, mongo)]
    assert [e.id for e in found[0].items] == [e.id for e in found[1].items] and len(found[0].items) == 1
    assert sqlite.statistics(0.0).events == mongo.statistics(0.0).events
    sqlite.close()
    print(f"MongoStore on mongomock, {MONGO_EVENTS:,} events: the same pages, search and counts", file=sys.stderr)


def report(results: dict[int, dict[str, float]], sizes: Sequence[int]) -> None:
    names = list(results[sizes[0]])
    smallest, largest = sizes[0], sizes[-1]
    rows = [
        (name, *(results[size][name] for size in sizes), f"{results[largest][name] / results[smallest][name]:.2f}×")
        for name in names
    ]
    headers = ("median ms", *(f"{size:,} events" for size in sizes), f"{largest:,} / {smallest:,}")
    print_table("Reads as the store grows (ms, median)", headers, rows)
    targets: list[tuple[str, float, str, str, float]] = []
    for name in names:
        if "by number" in name or "undeclared" in name:
            continue
        if name == "metrics scrape":
            targets.append((f"{name} at {largest:,}", results[largest][name], "ms", "<", SCRAPE_MS))
            continue
        targets.append((f"{name} at {largest:,}", results[largest][name], "ms", "<", LISTING_MS))
        ratio = results[largest][name] / results[smallest][name]
        targets.append((f"{name}, {largest:,} / {smallest:,}", ratio, "×", "<=", GROWTH))
    print_targets(targets)


if __name__ == "__main__":
    sys.exit(main())
