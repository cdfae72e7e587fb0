"""The Celery adapter: one thin task, its dispatcher, an in-process worker and the sweeper.

The task carries two ids and nothing else; the runner reloads the state from
the store. Messages are acknowledged late and re-queued when a worker is
lost, and no result is ever stored or waited for: the store holds the state.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from functools import cached_property
from typing import Any

import kombu
from celery import Celery
from celery.worker import WorkController
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)

STEP_TASK = "machinery.step"
QUEUE = "machinery"
COMMANDS_QUEUE = "machinery.commands"
"""The queue of the units of command services, which only workers started with ``--commands`` consume."""


def host_queue(host: str) -> str:
    """The queue of the fleet steps' items whose workloads ``host`` holds, which only that host consumes."""
    return f"machinery.host.{host}"


class _RedisChannel(kombu_redis.Channel):
    """kombu's Redis channel, sending through one Redis client of its own rather than a new one per message.

    redis-py fills each new client's table of response callbacks, a quarter of the cost of sending a step.
    The client takes a connection from the channel's pool for each command, as kombu's did.
    """

    @cached_property
    def _sender(self) -> Any:
        return self._create_client()

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        yield client or self._sender


class _RedisTransport(kombu_redis.Transport):
    Channel = _RedisChannel


def make_celery(broker_url: str, run_step: Callable[[str, str], None]) -> Celery:
    """A Celery app whose one task hands "step X of event Y" to ``run_step``."""
    app = Celery("machinery", broker=broker_url, set_as_current=False)
    if broker_url.startswith("redis://"):
        app.conf.broker_transport = f"{__name__}:_RedisTransport"
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=4,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        # The embedded memory transport polls; its default of 1 s would cap it near 8 tasks/s.
        broker_transport_options={"polling_interval": 0.005} if broker_url.startswith("memory") else {},
    )

    @app.task(name=STEP_TASK, ignore_result=True, shared=False)
    def step(event_id: str, step_id: str) -> None:
        run_step(event_id, step_id)

    return app


class CeleryDispatcher:
    """Sends the nudge "look at step X of event Y" as a Celery message, to ``queue``."""

    def __init__(self, app: Celery, queue: str = QUEUE) -> None:
        self.app = app
        self.queue = queue

    def dispatch(self, event_id: str, step_id: str, delay: float = 0.0) -> None:
        self.app.send_task(STEP_TASK, args=(event_id, step_id), countdown=delay or None, queue=self.queue)


class InProcessWorker:
    """A Celery worker on threads inside this process, for the embedded default (no broker to run)."""

    def __init__(self, app: Celery, concurrency: int) -> None:
        self.controller = WorkController(
            app=app,
            concurrency=concurrency,
            pool="threads",
            hostname=f"embedded-{id(self)}@machinery",
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            queues=[QUEUE],
            loglevel="WARNING",
        )
        self.thread = threading.Thread(target=self.controller.start, name="machinery-worker", daemon=True)

    def start(self) -> None:
        # Celery's thread pool runs each task with the default app, not the worker's.
        self.controller.app.set_default()
        self.thread.start()

    def stop(self) -> None:
        self.controller.stop(in_sighandler=False)
        self.thread.join(10)


class Sweeper:
    """Calls ``sweep`` every ``interval`` seconds in a thread, and once at once; logs ``report`` % what it returns."""

    def __init__(
        self,
        sweep: Callable[[], Any],
        interval: float,
        name: str = "sweeper",
        report: str = "sweeper sent %d overdue steps again",
    ) -> None:
        self.sweep = sweep
        self.interval = interval
        self.report = report
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"machinery-{name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                done = self.sweep()
                if done:
                    log.info(self.report, done)
            except Exception:
                log.exception("%s failed; trying again in %s s", self.thread.name, self.interval)
            self._stop.wait(self.interval)


class HostQueue:
    """Consumes a fleet host's own queue in a thread, running each message's unit in a pool of ``threads``.

    It runs in the host's main process, where its drivers are, not in the Celery pool. A message is acknowledged
    when it is taken: the store holds what it points at, and the sweeper sends it again if this process dies
    before the unit is done. One due later (a retry's backoff) waits here until it is due.
    """

    def __init__(
        self,
        app: Celery,
        queue: str,
        run_step: Callable[[str, str], None],
        threads: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.queue = kombu.Queue(queue, kombu.Exchange(queue, "direct"), routing_key=queue)
        self.run_step = run_step
        self.clock = clock
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="machinery-host-queue")
        self._free = threading.Semaphore(2 * threads)
        """Units taken but not done: at most twice the threads, so that a long queue stays in the broker."""
        self._later: list[tuple[float, str, str]] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="machinery-host-queue", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with (
                    self.app.connection_for_read() as connection,
                    connection.Consumer([self.queue], callbacks=[self._take], accept=["json"], prefetch_count=8),
                ):
                    while not self._stop.is_set():
                        with contextlib.suppress(socket.timeout):
                            connection.drain_events(timeout=self._wait())
                        self._run_due()
            except Exception:
                log.exception("consuming %s failed; trying again in 1 s", self.queue.name)
                self._stop.wait(1.0)

    def _take(self, body: Any, message: Any) -> None:
        message.ack()
        try:
            (event_id, unit), eta = body[0], message.headers.get("eta")
        except (TypeError, ValueError, IndexError, AttributeError):
            log.warning("dropped a message of %s that is no step: %r", self.queue.name, body)
            return
        at = datetime.fromisoformat(eta).timestamp() if eta else 0.0
        if at > self.clock():
            heapq.heappush(self._later, (at, event_id, unit))
        else:
            self._submit(event_id, unit)

    def _run_due(self) -> None:
        now = self.clock()
        while self._later and self._later[0][0] <= now:
            _, event_id, unit = heapq.heappop(self._later)
            self._submit(event_id, unit)

    def _wait(self) -> float:
        """How long to wait for a message: until the next unit held here is due, a second at most."""
        if not self._later:
            return 1.0
        return min(1.0, max(0.01, self._later[0][0] - self.clock()))

    def _submit(self, event_id: str, unit: str) -> None:
        self._free.acquire()
        self.pool.submit(self._run, event_id, unit)

    def _run(self, event_id: str, unit: str) -> None:
        try:
            self.run_step(event_id, unit)
        except Exception:
            log.exception("running %s of event %s failed; the sweeper sends it again", unit, event_id)
        finally:
            self._free.release()
