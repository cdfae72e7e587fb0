"""The composition root: configuration in, a running machinery out.

Nothing else constructs stores, callers, dispatchers or Celery apps. With no
MongoDB configured the store is the embedded SQLite database under
``MACHINERY_DATA_DIR``; with no broker configured the workers run inside the
API's process on an in-memory transport.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import kombu

from machinery import logs
from machinery.addresses import AddressGuard, Network, parse_networks
from machinery.cel import DEFAULT_BUDGET, CelExpressions
from machinery.engine.errors import InvalidConfig
from machinery.engine.kinds.fleet import TASK
from machinery.engine.plan import Settings
from machinery.engine.ports import ServiceCaller, Store
from machinery.fleets.adhoc import AdHoc
from machinery.fleets.host import FleetHost
from machinery.fleets.registry import Fleets
from machinery.fleets.tasks import TaskCaller
from machinery.programs import parse_allowed
from machinery.registry import Registry
from machinery.runtime import Events, Plans, Runner, ServiceCache
from machinery.runtime.routes import FleetRoutes
from machinery.schedules import Scheduler, Schedules
from machinery.services.command import DEFAULT_MAX_OUTPUT, CommandCaller
from machinery.services.http import HttpCaller
from machinery.services.prober import HealthProber
from machinery.services.secrets import Secrets
from machinery.telemetry import PrometheusTelemetry
from machinery.worker import (
    COMMANDS_QUEUE,
    CeleryDispatcher,
    HostQueue,
    InProcessWorker,
    Sweeper,
    host_queue,
    make_celery,
)

EMBEDDED_BROKER = "memory://"
DAY = 24 * 3600.0
RETENTION_INTERVAL = 60.0
"""Seconds between two purges of the events past MACHINERY_RETENTION_DAYS."""
BROKER_PROBE_TIMEOUT = 2.0
"""Seconds the readiness probe waits for the broker."""


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "machinery"


class Role(StrEnum):
    """What a bearer token may do; each role may do all that those listed before it may."""

    READER = "reader"
    """Every ``GET``."""
    PRODUCER = "producer"
    """Send events and act on them: signals, cancel, pause, resume, retry, rerun."""
    ADMIN = "admin"
    """Everything, registering and removing services and workflows too."""

    def includes(self, other: Role) -> bool:
        """Whether a token of this role may do what one of ``other`` may."""
        roles = list(Role)
        return roles.index(self) >= roles.index(other)


def _read_tokens(setting: str) -> dict[str, Role]:
    """``MACHINERY_API_TOKENS``: comma-separated tokens, each ``role:token``, or a bare token, an admin's.

    Whatever comes before an entry's first ``:`` must be a role, so that a mistyped role is an error rather
    than part of an admin's token: a token that contains ``:`` is written after its role, ``admin:to:ken``.
    Errors name a token by its position in the list, never by its text, which is a secret.
    """
    tokens: dict[str, Role] = {}
    for position, entry in enumerate(filter(None, (t.strip() for t in setting.split(","))), start=1):
        prefix, colon, rest = entry.partition(":")
        token = rest.strip() if colon else entry
        where = f"MACHINERY_API_TOKENS, token {position}"
        if colon and prefix not in set(Role):
            raise InvalidConfig(
                f"{where}: what comes before its first ':' is not a role (admin, producer or reader);"
                " a token that contains ':' is written after its role, as in admin:<token>"
            )
        role = Role(prefix) if colon else Role.ADMIN
        if not token:
            raise InvalidConfig(f"{where}: the role {role} has no token after it")
        if token in tokens:
            raise InvalidConfig(f"{where}: the same token is listed before it; a token has one role")
        tokens[token] = role
    return tokens


@dataclass(frozen=True)
class Config:
    """Every setting, read from ``MACHINERY_*`` environment variables by :meth:`from_env`."""

    data_dir: Path = field(default_factory=default_data_dir)
    mongo_uri: str | None = None
    broker_url: str | None = None
    concurrency: int = 8
    sweep_interval: float = 5.0
    health_interval: float = 10.0
    """Seconds between two probes of the services that have a health check; 0 probes none."""
    health_down_after: int = 3
    """Failed probes in a row after which a service is down, and its calls are held."""
    secrets_dir: Path | None = None
    """Where the files of secret references are, besides ``MACHINERY_SECRET_<NAME>`` variables."""
    retention_days: float | None = None
    """Days a finished event is kept; None keeps them all."""
    expression_budget: float = DEFAULT_BUDGET
    """Estimated cost an expression may take over its data before it is refused (see ``machinery.cel``)."""
    deny_networks: tuple[Network, ...] = ()
    """Networks the workers may not call, besides the link-local, unspecified and multicast addresses."""
    max_request_bytes: int = 1024 * 1024
    """The largest request body the API reads; a larger one is answered 413."""
    max_json_depth: int = 64
    """How deeply a JSON request body may nest; a deeper one is answered 400 before it is parsed."""
    max_response_bytes: int = 10 * 1024 * 1024
    """The largest answer read from a service; a larger one fails the step."""
    log_format: str = "text"
    """How the API and the workers write their logs: one of ``machinery.logs.FORMATS``."""
    public_url: str | None = None
    """The API's URL as services reach it, for the callback URLs the workers give callback services."""
    commands_allowed: tuple[Path, ...] = ()
    """The programs, and directories of them, that executables may name; with none, no command is run."""
    commands_max_output: int = DEFAULT_MAX_OUTPUT
    """The bytes of a command's stdout, and of its stderr, that are kept; the rest is dropped, and said to be."""
    run_commands: bool = False
    """Whether this process's workers run command services: set by ``machinery worker --commands``, never by the API."""
    commands_root: bool = False
    """Whether they run parameters that require root: ``machinery worker --commands --allow-root``."""
    host_fleets: bool = False
    """Whether the embedded workers host the fleets' workloads too: ``machinery serve --fleets``, with no broker."""
    schedule_interval: float = 1.0
    """Seconds between two passes of the scheduler over the schedules that are due; 0 runs no scheduler here."""
    schedule_grace: float = 60.0
    """Seconds late a schedule's run may start; a run later than that was missed (see a schedule's catch-up)."""
    fleet_interval: float = 1.0
    """Seconds between two rounds of a fleet host: leases renewed, workloads assigned and started or stopped."""
    fleet_lease: float = 15.0
    """Seconds a fleet host's lease lasts unrenewed: after it, its workloads are given to other hosts."""
    fleet_threads: int = 32
    """Threads of a fleet host that call the drivers (inits, pings, stops)."""
    engine: Settings = Settings()
    api_tokens: Mapping[str, Role] = field(default_factory=dict, repr=False)
    """The bearer tokens the API accepts, each with its role; with none, the API is open. Secrets: out of ``repr``."""

    @property
    def embedded_worker(self) -> bool:
        return self.broker_url is None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Config:
        def number(name: str, default: float) -> float:
            raw = env.get(f"MACHINERY_{name}")
            try:
                return float(raw) if raw else default
            except ValueError as e:
                raise InvalidConfig(f"MACHINERY_{name} should be a number, not {raw!r}") from e

        defaults = Settings()
        if number("FLEET_LEASE", cls.fleet_lease) <= number("FLEET_INTERVAL", cls.fleet_interval):
            raise InvalidConfig("MACHINERY_FLEET_LEASE should be longer than MACHINERY_FLEET_INTERVAL")
        if number("SCHEDULE_GRACE", cls.schedule_grace) <= 0:
            raise InvalidConfig("MACHINERY_SCHEDULE_GRACE should be more than 0 seconds")
        log_format = env.get("MACHINERY_LOG_FORMAT") or "text"
        if log_format not in logs.FORMATS:
            raise InvalidConfig(f"MACHINERY_LOG_FORMAT should be one of {', '.join(logs.FORMATS)}, not {log_format!r}")
        return cls(
            data_dir=Path(env["MACHINERY_DATA_DIR"]) if env.get("MACHINERY_DATA_DIR") else default_data_dir(),
            mongo_uri=env.get("MACHINERY_MONGO_URI") or None,
            broker_url=env.get("MACHINERY_BROKER_URL") or None,
            concurrency=int(number("CONCURRENCY", 8)),
            sweep_interval=number("SWEEP_INTERVAL", 5.0),
            health_interval=number("HEALTH_INTERVAL", 10.0),
            health_down_after=int(number("HEALTH_DOWN_AFTER", 3)),
            secrets_dir=Path(env["MACHINERY_SECRETS_DIR"]) if env.get("MACHINERY_SECRETS_DIR") else None,
            retention_days=number("RETENTION_DAYS", 0) or None,
            expression_budget=number("EXPRESSION_BUDGET", DEFAULT_BUDGET),
            deny_networks=parse_networks(env.get("MACHINERY_DENY_NETWORKS", "")),
            max_request_bytes=int(number("MAX_REQUEST_BYTES", cls.max_request_bytes)),
            max_json_depth=int(number("MAX_JSON_DEPTH", cls.max_json_depth)),
            max_response_bytes=int(number("MAX_RESPONSE_BYTES", cls.max_response_bytes)),
            log_format=log_format,
            public_url=env.get("MACHINERY_PUBLIC_URL") or None,
            commands_allowed=parse_allowed(env.get("MACHINERY_COMMANDS_ALLOWED", "")),
            commands_max_output=int(number("COMMANDS_MAX_OUTPUT", DEFAULT_MAX_OUTPUT)),
            schedule_interval=number("SCHEDULE_INTERVAL", cls.schedule_interval),
            schedule_grace=number("SCHEDULE_GRACE", cls.schedule_grace),
            fleet_interval=number("FLEET_INTERVAL", cls.fleet_interval),
            fleet_lease=number("FLEET_LEASE", cls.fleet_lease),
            fleet_threads=int(number("FLEET_THREADS", cls.fleet_threads)),
            engine=Settings(
                lease_grace=number("LEASE_GRACE", defaults.lease_grace),
                stale_after=number("STALE_AFTER", defaults.stale_after),
                max_lost=int(number("MAX_LOST", defaults.max_lost)),
                max_map_items=int(number("MAX_MAP_ITEMS", defaults.max_map_items)),
                max_map_results=int(number("MAX_MAP_RESULTS", defaults.max_map_results)),
                max_workflow_depth=int(number("MAX_WORKFLOW_DEPTH", defaults.max_workflow_depth)),
            ),
            api_tokens=_read_tokens(env.get("MACHINERY_API_TOKENS", "")),
        )


class Machinery:
    """Everything machinery is made of, wired together from a :class:`Config`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = _open_store(config)
        expressions = CelExpressions(config.expression_budget)
        self.guard = AddressGuard(config.deny_networks)
        self.registry = Registry(
            self.store,
            expressions,
            self.guard,
            max_workflow_depth=config.engine.max_workflow_depth,
            commands_allowed=config.commands_allowed,
            fleets=self.store,
        )
        self.plans = Plans(self.store, expressions)
        self.celery = make_celery(config.broker_url or EMBEDDED_BROKER, self._run_step)
        self.dispatcher = CeleryDispatcher(self.celery)
        self.telemetry = PrometheusTelemetry()
        self.events = Events(
            self.store, self.store, self.dispatcher, config.engine, self.plans, telemetry=self.telemetry
        )
        self.secrets = Secrets(config.secrets_dir)
        callers: dict[str, ServiceCaller] = {
            "http": HttpCaller(
                max(10, config.concurrency), config.max_response_bytes, self.guard, self.secrets, config.public_url
            )
        }
        if config.run_commands:
            callers["command"] = CommandCaller(
                self.store.get_executable,
                config.commands_allowed,
                root=config.commands_root,
                max_output=config.commands_max_output,
            )
        self.runner = Runner(
            self.store,
            self.dispatcher,
            callers,
            config.engine,
            self.plans,
            ServiceCache(self.store, fleets=self.store),
            telemetry=self.telemetry,
            # Embedded, no worker could ever take them: the step waits, saying so, and nothing piles up in memory.
            elsewhere={"command": CeleryDispatcher(self.celery, COMMANDS_QUEUE)} if config.broker_url else {},
            routes=self._routes(),
        )
        self.schedules = Schedules(self.store, self.store, self.plans, config.engine)
        self.scheduler = Scheduler(self.store, self.events.submit, grace=config.schedule_grace)
        self.fleets = Fleets(self.store, self.guard, check=self.registry.check_fleet)
        self.adhoc = AdHoc(self.store, self.registry, self.events)
        self._background: list[_Part] = []

    def _run_step(self, event_id: str, step_id: str) -> None:
        self.runner.run(event_id, step_id)

    def start_sweeper(self) -> None:
        """Start the sweeper, the scheduler and the health prober unless their MACHINERY_*_INTERVAL is 0, and the
        purge of old events if MACHINERY_RETENTION_DAYS is set."""
        self._start(Sweeper(self.runner.sweep, self.config.sweep_interval))
        if self.config.schedule_interval > 0:
            report = "the scheduler made %d events of schedules"
            self._start(Sweeper(self.scheduler.run_due, self.config.schedule_interval, "scheduler", report))
        if self.config.retention_days:
            kept = self.config.retention_days * DAY
            report = "deleted %d finished events past MACHINERY_RETENTION_DAYS"
            self._start(Sweeper(lambda: self.events.purge(kept), RETENTION_INTERVAL, "purge", report))
        if self.config.health_interval > 0:
            prober = HealthProber(
                self.store,
                self.dispatcher,
                self.config.health_down_after,
                self.config.health_interval,
                secrets=self.secrets,
                guard=self.guard,
            )
            self._start(Sweeper(prober.probe, self.config.health_interval, "prober", "%d services changed health"))

    def start_fleet_host(self, name: str | None = None) -> FleetHost:
        """Host workloads of every fleet in this process (``machinery worker --fleets``), as ``name``: by default
        this machine's name and the process's id. The items of fleet steps whose workloads it holds come to its
        own queue, and run here, where its drivers are."""
        host = FleetHost(
            self.store,
            name or f"{socket.gethostname()}:{os.getpid()}",
            interval=self.config.fleet_interval,
            lease=self.config.fleet_lease,
            threads=self.config.fleet_threads,
            guard=self.guard,
            on_ping=self.telemetry.ping_done,
        )
        tasks = TaskCaller(host, self.config.fleet_threads)
        runner = Runner(
            self.store,
            self.dispatcher,
            {TASK: tasks},
            self.config.engine,
            self.plans,
            ServiceCache(self.store, fleets=self.store),
            telemetry=self.telemetry,
            routes=self._routes(here=host.name),
        )
        self._start(host)
        self._background.append(tasks)
        self._start(HostQueue(self.celery, host_queue(host.name), runner.run, self.config.fleet_threads))
        return host

    def _routes(self, here: str | None = None) -> FleetRoutes:
        return FleetRoutes(self.store, lambda host: CeleryDispatcher(self.celery, host_queue(host)), here)

    def start_embedded_worker(self) -> None:
        """Run the workers and the sweeper in this process, on the in-memory transport."""
        self._start(InProcessWorker(self.celery, self.config.concurrency))
        self.start_sweeper()

    def unreachable(self) -> list[str]:
        """What this process needs but cannot reach now: the store, and the broker if workers run apart."""
        problems = []
        try:
            self.store.ping()
        except Exception as e:  # whatever the driver raises, the probe reports it
            problems.append(f"the store cannot be reached: {e}")
        if self.config.broker_url:
            try:
                with kombu.Connection(self.config.broker_url, connect_timeout=BROKER_PROBE_TIMEOUT) as connection:
                    connection.ensure_connection(max_retries=1)
            except Exception as e:
                problems.append(f"the broker cannot be reached: {e}")
        return problems

    def stop(self) -> None:
        """Stop the workers and the sweeper this process runs."""
        while self._background:
            self._background.pop().stop()

    def _start(self, part: InProcessWorker | Sweeper | FleetHost | HostQueue) -> None:
        part.start()
        self._background.append(part)


class _Part(Protocol):
    """What this process runs beside its work, stopped in the reverse order of its start."""

    def stop(self) -> None: ...


def _open_store(config: Config) -> Store:
    if config.mongo_uri:
        from pymongo import MongoClient

        from machinery.store.mongo import MongoStore

        client: MongoClient = MongoClient(config.mongo_uri, connect=False)
        return MongoStore(client.get_default_database("machinery"))
    from machinery.store.sqlite import SqliteStore

    config.data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteStore(str(config.data_dir / "machinery.db"))
