"""Drivers: the platform integration of a fleet, one class per platform.

A driver is found by name among the entry points of the group ``machinery.drivers``
(so that a user brings one without forking machinery) and the built-ins: ``http``,
for a device or agent with an HTTP API, and ``simulated``, for tests and benchmarks.
An entry point names a callable, usually the class, that takes a :class:`DriverContext`.

Every method but ``check_config`` may block, and is called from a host's thread pool;
a failure is any exception, its text the workload's message.
"""

from __future__ import annotations

import json
import random
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol

import urllib3
from urllib3.exceptions import HTTPError

from machinery.addresses import DEFAULT_GUARD, AddressGuard
from machinery.engine.errors import InvalidDefinition, MachineryError
from machinery.engine.fleets import FleetSettings, Workload
from machinery.services.http import GuardedPool, read_at_most

GROUP = "machinery.drivers"
MAX_ANSWER_BYTES = 1024 * 1024
"""The largest answer the http driver reads from a workload."""


class DriverError(MachineryError):
    """A workload did not do what its driver asked: its text says why."""


@dataclass(frozen=True)
class DriverContext:
    """What a driver is made with: its fleet's settings, and the rule of the addresses it may call."""

    settings: FleetSettings = FleetSettings()
    guard: AddressGuard = field(default=DEFAULT_GUARD)


class Driver(Protocol):
    """The platform integration of a fleet's workloads."""

    def check_config(self, config: Mapping[str, Any]) -> list[str]:
        """What is wrong with a workload's configuration; nothing if it is fine. Must not block."""
        ...

    def init(self, workload: Workload) -> None:
        """Make the workload ready (connect, log in, ...) within the fleet's ``init_timeout``."""
        ...

    def ping(self, workload: Workload) -> None:
        """Check that it answers, within the fleet's ``ping_timeout``; raise if it does not."""
        ...

    def run(self, workload: Workload, task: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """Run one of the fleet's tasks on it; its typed results."""
        ...

    def stop(self, workload: Workload) -> None:
        """Let it go: it was removed, moved to another host, or is dead."""
        ...

    def info(self, workload: Workload) -> Mapping[str, Any]:
        """What the driver knows of it, to show."""
        ...


DriverFactory = Callable[[DriverContext], Driver]


class HttpDriver:
    """A workload with an HTTP API at ``config["url"]``: ping is ``GET <url>/ping``, a task
    ``POST <url>/tasks/<task>`` with its arguments as a JSON object, answered with its results as one."""

    def __init__(self, context: DriverContext) -> None:
        self.settings = context.settings
        self.guard = context.guard
        self.pool = GuardedPool(context.guard, pool_size=32)

    def check_config(self, config: Mapping[str, Any]) -> list[str]:
        url = config.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return ["config.url should be an http:// or https:// URL"]
        refused = self.guard.check_url(url)
        return [f"config.url: {refused}"] if refused else []

    def init(self, workload: Workload) -> None:
        self._request(workload, "GET", "/ping", self.settings.init_timeout)

    def ping(self, workload: Workload) -> None:
        self._request(workload, "GET", "/ping", self.settings.ping_timeout)

    def run(self, workload: Workload, task: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        body = json.dumps(dict(args)).encode()
        answer = self._request(workload, "POST", f"/tasks/{task}", self.settings.init_timeout, body)
        try:
            results = json.loads(answer or b"{}")
        except ValueError as e:
            raise DriverError(f"task {task!r} answered something other than JSON") from e
        if not isinstance(results, dict):
            raise DriverError(f"task {task!r} answered JSON that is not an object")
        return results

    def stop(self, workload: Workload) -> None:
        """Nothing to let go: the driver holds no connection of its own to a workload."""

    def info(self, workload: Workload) -> Mapping[str, Any]:
        return {"url": workload.config.get("url")}

    def _request(self, workload: Workload, method: str, path: str, timeout: float, body: bytes = b"") -> bytes:
        url = str(workload.config["url"]).rstrip("/") + path
        headers = {"Content-Type": "application/json"} if body else {}
        try:
            response = self.pool.request(method, url, urllib3.Timeout(total=timeout), headers, body)
        except (HTTPError, OSError) as e:
            raise DriverError(f"{method} {url} failed: {e}") from e
        try:
            answer = read_at_most(response, MAX_ANSWER_BYTES)
        finally:
            response.release_conn()
        if not 200 <= response.status < 300:
            raise DriverError(f"{method} {url} answered {response.status}")
        if answer is None:
            raise DriverError(f"{method} {url} answered more than {MAX_ANSWER_BYTES} bytes")
        return answer


class SimulatedDriver:
    """Workloads that exist only in memory, for tests and benchmarks. A workload's config may set ``latency``
    (seconds per call), ``failure_rate`` (of pings and inits, from 0 to 1), ``seed`` (the same seed, the same
    failures, call after call) and ``down`` (every call fails). A task echoes its arguments."""

    def __init__(self, context: DriverContext) -> None:
        self.settings = context.settings
        self._calls: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def check_config(self, config: Mapping[str, Any]) -> list[str]:
        problems = []
        latency, rate = config.get("latency", 0), config.get("failure_rate", 0)
        if not isinstance(latency, int | float) or latency < 0:
            problems.append("config.latency should be a number of seconds, 0 or more")
        if not isinstance(rate, int | float) or not 0 <= rate <= 1:
            problems.append("config.failure_rate should be a number from 0 to 1")
        return problems

    def init(self, workload: Workload) -> None:
        self._call(workload, "init", self.settings.init_timeout)

    def ping(self, workload: Workload) -> None:
        self._call(workload, "ping", self.settings.ping_timeout)

    def run(self, workload: Workload, task: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        self._call(workload, task, self.settings.init_timeout, fails=False)
        return dict(args)

    def stop(self, workload: Workload) -> None:
        with self._lock:
            for key in [key for key in self._calls if key[0] == workload.name]:
                del self._calls[key]

    def info(self, workload: Workload) -> Mapping[str, Any]:
        return {"simulated": True, **workload.config}

    def _call(self, workload: Workload, what: str, timeout: float, *, fails: bool = True) -> None:
        config = workload.config
        with self._lock:
            count = self._calls.get((workload.name, what), 0)
            self._calls[workload.name, what] = count + 1
        latency = float(config.get("latency", 0))
        if latency > timeout:
            time.sleep(timeout)
            raise DriverError(f"{what} timed out after {timeout:g} s")
        if latency:
            time.sleep(latency)
        if not fails:
            return
        if config.get("down"):
            raise DriverError(f"{workload.name} is down")
        # Seeded by the workload, the call and its count: the same failures, run after run.
        draw = random.Random(zlib.crc32(f"{config.get('seed', 0)}/{workload.name}/{what}/{count}".encode())).random()
        if draw < float(config.get("failure_rate", 0)):
            raise DriverError(f"{what} failed (simulated)")


BUILT_IN: Mapping[str, DriverFactory] = {"http": HttpDriver, "simulated": SimulatedDriver}


def driver_names() -> list[str]:
    """The drivers that can be named: the built-ins and those of installed entry points."""
    return sorted({*BUILT_IN, *(ep.name for ep in entry_points(group=GROUP))})


def load_driver(name: str) -> DriverFactory:
    """The driver called ``name``: an entry point of ``machinery.drivers`` first, else a built-in."""
    for ep in entry_points(group=GROUP, name=name):
        factory: DriverFactory = ep.load()
        return factory
    if name in BUILT_IN:
        return BUILT_IN[name]
    raise InvalidDefinition(f"no driver {name!r}: the drivers are {', '.join(driver_names())}")
