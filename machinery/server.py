"""The production HTTP server: gunicorn, driven from Python, serving the API in worker processes on threads.

Each worker process makes its own :class:`~machinery.bootstrap.Machinery` (and so its own store connections
and broker client) after it is forked, never one inherited from the process that forked it. On SIGTERM the
server stops accepting connections and lets the requests under way finish, for up to ``GRACEFUL_TIMEOUT``
seconds. Its logs, the access log included, go through the handler :func:`machinery.logs.configure` set.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gunicorn import glogging
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.workers.base import Worker

from machinery.api import create_app
from machinery.bootstrap import Config, Machinery

GRACEFUL_TIMEOUT = 30
"""Seconds the requests under way have to finish after a SIGTERM, before their process is killed."""
DEFAULT_THREADS = 8
"""Threads per worker process: a request mostly waits on the store and the broker, and waits release the GIL."""

WSGIApplication = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def default_workers() -> int:
    """One worker process per core."""
    return os.cpu_count() or 1


class _Logger(glogging.Logger):
    """Gunicorn's error and access logs, passed on to the root logger's handler rather than gunicorn's own."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            log.handlers.clear()
            log.propagate = True


CONNECTIONS_PER_THREAD = 2
"""Connections a worker process holds per thread, so that keep-alive clients spread over the processes."""


class Server(BaseApplication):
    """The API under gunicorn, for ``config``, at ``host``:``port``, with ``workers`` processes of ``threads``
    threads each.

    Without a broker the in-process workers and the sweeper share the in-memory transport of one process, so
    that ``workers`` must be 1: it is the caller's to say so (``machinery serve`` does).
    """

    def __init__(self, config: Config, host: str, port: int, workers: int, threads: int) -> None:
        self.config = config
        self.options: Mapping[str, Any] = {
            "bind": f"{host}:{port}",
            "workers": workers,
            "threads": threads,
            # Connections stay with the worker that accepted them; unbounded, the first worker to wake takes a
            # burst of keep-alive clients and the others idle. Two per thread, of which gthread keeps at most
            # one per thread alive (it answers the others with Connection: close): no client waits for a slot.
            "worker_connections": threads * CONNECTIONS_PER_THREAD,
            # Each worker process loads the app after the fork, so that nothing it connects to is shared.
            "preload_app": False,
            "graceful_timeout": GRACEFUL_TIMEOUT,
            "accesslog": "-",
            "logger_class": _Logger,
            "post_worker_init": _post_worker_init,
            "worker_exit": _worker_exit,
            # Gunicorn's control socket sits at one path per user by default: two servers would share it.
            "control_socket_disable": True,
        }
        self.machinery: Machinery | None = None
        super().__init__(prog="machinery serve")

    def load_config(self) -> None:
        for name, value in self.options.items():
            self.cfg.set(name, value)

    def load(self) -> WSGIApplication:
        """The API, made in the worker process that serves it."""
        self.machinery = Machinery(self.config)
        return create_app(self.machinery)


def _post_worker_init(worker: Worker) -> None:
    machinery = worker.app.machinery
    if machinery.config.embedded_worker:
        machinery.start_embedded_worker()
        if machinery.config.host_fleets:
            machinery.start_fleet_host()


def _worker_exit(arbiter: Arbiter, worker: Worker) -> None:
    if worker.app.machinery is not None:
        worker.app.machinery.stop()
