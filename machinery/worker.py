"""The Celery adapter: one thin task, its dispatcher, an in-process worker and the sweeper.

The task carries two ids and nothing else; the runner reloads the state from
the store. Messages are acknowledged late and re-queued when a worker is
lost, and no result is ever stored or waited for: the store holds the state.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

from celery import Celery
from celery.worker import WorkController
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)

STEP_TASK = "machinery.step"
QUEUE = "machinery"
COMMANDS_QUEUE = "machinery.commands"
"""The queue of the units of command services, which only workers started with ``--commands`` consume."""


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
