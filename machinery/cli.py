"""The ``machinery`` command line."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, Protocol

import click
from celery.signals import setup_logging, worker_ready
from marshmallow import Schema, ValidationError
from prometheus_client import CollectorRegistry, start_http_server

from machinery import logs
from machinery.bootstrap import DAY, Config, Machinery
from machinery.client import Client, EventView, ItemCounts, StepView
from machinery.codec import executable_to_dict, service_to_dict, workflow_to_dict
from machinery.engine.errors import ConversionError, InvalidConfig, MachineryError, NotFound, Unauthorized
from machinery.engine.model import Executable, Service, Workflow
from machinery.engine.ports import Page, every
from machinery.engine.state import EventStatus
from machinery.importers import convert
from machinery.render import FORMATS, event_graph, render, workflow_graph
from machinery.server import DEFAULT_THREADS, Server, default_workers
from machinery.telemetry import MULTIPROCESS_DIR, clear_multiprocess_dir
from machinery.validation import ExecutableSchema, ServiceSchema, WorkflowSchema
from machinery.worker import COMMANDS_QUEUE, QUEUE

log = logging.getLogger(__name__)

EXIT_INVALID = 2
"""What it was given cannot be read: a setting, a file, a document to convert."""
EXIT_REFUSED = 3
"""What it was given was read, but machinery refuses it, or cannot do what it asks."""
EXIT_EVENT_FAILED = 4
"""The event waited for or watched ended failed or cancelled."""
EXIT_UNFINISHED = 5
"""The event waited for had not ended when --timeout ran out."""

EXIT_CODES: dict[type[MachineryError], int] = {
    InvalidConfig: EXIT_INVALID,
    ConversionError: EXIT_INVALID,
    MachineryError: EXIT_REFUSED,
}
"""The exit code of each error a command lets out, found by its class or the nearest base listed."""


class _Main(click.Group):
    """The commands, saying any machinery error on standard error and exiting with its code in ``EXIT_CODES``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MachineryError as e:
            details = "".join(f"\n  - {p.message}" for p in e.problems)
            hint = " (give --token or set MACHINERY_TOKEN)" if isinstance(e, Unauthorized) else ""
            _fail(f"{e.message}{hint}{details}", next(EXIT_CODES[c] for c in type(e).__mro__ if c in EXIT_CODES))
        except TimeoutError as e:
            _fail(str(e), EXIT_UNFINISHED)


class Definitions(Protocol):
    """What ``apply`` and ``export`` need of the executables, services and workflows: the local store's
    :class:`~machinery.registry.Registry`, or a running server's through :class:`~machinery.client.Client`."""

    def get_service(self, name: str) -> Service: ...
    def add_service(self, service: Service) -> Service: ...
    def replace_service(self, name: str, service: Service) -> Service: ...
    def list_services(self, *, offset: int = 0, limit: int = 100) -> Page[Service]: ...
    def get_workflow(self, key: str) -> Workflow: ...
    def add_workflow(self, workflow: Workflow) -> Workflow: ...
    def replace_workflow(self, key: str, workflow: Workflow) -> Workflow: ...
    def list_workflows(self, *, offset: int = 0, limit: int = 100) -> Page[Workflow]: ...
    def get_executable(self, name: str) -> Executable: ...
    def add_executable(self, executable: Executable) -> Executable: ...
    def replace_executable(self, name: str, executable: Executable) -> Executable: ...
    def list_executables(self, *, offset: int = 0, limit: int = 100) -> Page[Executable]: ...


def _machinery() -> Machinery:
    return Machinery(Config.from_env())


def _remote(*, required: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command the options ``--url`` and ``--token``, and pass it ``client``: a :class:`Client` of the
    server at ``--url``, or None without one, which a command that only talks to a server refuses."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @click.option(
            "--url",
            envvar="MACHINERY_URL",
            metavar="URL",
            help="A running server's API (MACHINERY_URL)"
            + ("." if required else "; without it, the local store (MACHINERY_DATA_DIR or MACHINERY_MONGO_URI)."),
        )
        @click.option("--token", envvar="MACHINERY_TOKEN", help="The bearer token to send it (MACHINERY_TOKEN).")
        @functools.wraps(command)
        def with_client(url: str | None, token: str | None, **kwargs: Any) -> Any:
            if url is None and required:
                name = click.get_current_context().info_name
                raise click.UsageError(f"`machinery {name}` talks to a running server: give --url or set MACHINERY_URL")
            return command(client=Client(url, token) if url else None, **kwargs)

        return with_client

    return decorate


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """machinery: chain typed HTTP microservices into workflows, and run events through them.

    Configuration comes from the environment: MACHINERY_DATA_DIR (the embedded store),
    MACHINERY_MONGO_URI (use MongoDB instead), MACHINERY_BROKER_URL (run workers apart),
    MACHINERY_API_TOKENS (require a bearer token); the README lists them all.

    Given --url (or MACHINERY_URL) and --token (or MACHINERY_TOKEN), apply, export and render work on a
    running server instead of the local store, and send, events, event, signal, cancel, pause, resume and
    retry, which only talk to a server, can.
    """


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(min=1),
    help="Server processes (default: one per core). Always 1 without MACHINERY_BROKER_URL.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=DEFAULT_THREADS,
    show_default=True,
    help="Threads per server process, each serving one request at a time.",
)
@click.option(
    "--fleets",
    is_flag=True,
    help="Without MACHINERY_BROKER_URL: host the fleets' workloads in that one process too, to try fleets out.",
)
def serve(host: str, port: int, workers: int | None, threads: int, fleets: bool) -> None:
    """Serve the API and dashboard with gunicorn; without a broker, run the workers in its one process too.

    SIGTERM stops it gracefully: it accepts no more connections, and the requests under way have
    30 s to finish.
    """
    config = dataclasses.replace(Config.from_env(), host_fleets=fleets)
    if fleets and not config.embedded_worker:
        raise click.UsageError(
            "--fleets hosts fleets beside the embedded workers: with a broker, run `machinery worker --fleets`"
        )
    logs.configure(config.log_format)
    if config.embedded_worker:
        if workers not in (None, 1):
            log.warning("without MACHINERY_BROKER_URL the workers share one process's memory: serving with 1 process")
        workers = 1
    clear_multiprocess_dir()
    Server(config, host, port, workers or default_workers(), threads).run()


@main.command()
@click.option("--concurrency", "-c", type=int, help="Worker processes or threads (default: MACHINERY_CONCURRENCY).")
@click.option(
    "--pool",
    type=click.Choice(["prefork", "threads", "solo"]),
    help="The pool running the units (default: prefork; threads with --fleets).",
)
@click.option("--loglevel", default="INFO", show_default=True)
@click.option(
    "--metrics-port",
    type=int,
    help="Serve the pool's Prometheus metrics at http://0.0.0.0:PORT/metrics (a prefork pool needs "
    "PROMETHEUS_MULTIPROC_DIR set to a directory of its own).",
)
@click.option(
    "--commands",
    is_flag=True,
    help="Run command services too (their own queue), for programs under MACHINERY_COMMANDS_ALLOWED.",
)
@click.option("--allow-root", is_flag=True, help="With --commands: run parameters that require root.")
@click.option(
    "--fleets",
    is_flag=True,
    help="Host workloads of the fleets too: initialise, ping and stop those the assigner gives this worker.",
)
@click.option("--host-name", help="With --fleets: this host's name (default: the machine's name and the process id).")
def worker(
    concurrency: int | None,
    pool: str | None,
    loglevel: str,
    metrics_port: int | None,
    commands: bool,
    allow_root: bool,
    fleets: bool,
    host_name: str | None,
) -> None:
    """Run a Celery worker (and a sweeper) against MACHINERY_BROKER_URL."""
    if allow_root and not commands:
        raise click.UsageError("--allow-root is for workers that run commands: add --commands")
    # A host's threads call its drivers all the time: a prefork pool would fork them mid-call, locks held.
    pool = pool or ("threads" if fleets else "prefork")
    if host_name and not fleets:
        raise click.UsageError("--host-name names a worker that hosts fleets: add --fleets")
    config = dataclasses.replace(Config.from_env(), run_commands=commands, commands_root=allow_root)
    if commands and not config.commands_allowed:
        raise click.UsageError("--commands runs only programs under MACHINERY_COMMANDS_ALLOWED: set it")
    if metrics_port is not None and pool == "prefork" and not os.environ.get(MULTIPROCESS_DIR):
        raise click.UsageError(
            f"a prefork pool's processes record their metrics in files: set {MULTIPROCESS_DIR} to an empty "
            "directory of this worker's own"
        )
    if metrics_port is not None:
        clear_multiprocess_dir()
    machinery = Machinery(config)
    logs.configure(machinery.config.log_format, loglevel.upper())
    # Logging is configured: Celery's worker must leave it as it is.
    setup_logging.connect(lambda **_: None, weak=False)
    if machinery.config.embedded_worker:
        raise click.UsageError(
            "set MACHINERY_BROKER_URL (redis://... or amqp://...) to run workers apart; "
            "without a broker `machinery serve` runs them in its own process"
        )

    def beside_the_pool(**_: Any) -> None:
        # Once the pool has forked its processes: a fork copies none of this process's threads but every lock they
        # hold, and a child that inherits one held mid-call hangs (the pool's warm shutdown then waits for ever).
        machinery.start_sweeper()
        if fleets:
            # In the main process, not the pool: one host per worker, whatever its concurrency.
            machinery.start_fleet_host(host_name)
        if metrics_port is not None:
            registry = CollectorRegistry()
            machinery.telemetry.register(registry)
            start_http_server(metrics_port, registry=registry)

    worker_ready.connect(beside_the_pool, weak=False)
    argv = [
        *(["--quiet"] if machinery.config.log_format == "json" else []),  # no banner amid the JSON lines
        "worker",
        f"--loglevel={loglevel}",
        f"--pool={pool}",
        f"--concurrency={concurrency or machinery.config.concurrency}",
        # A node name of its own: two workers on one machine would share celery@<host>, and RabbitMQ lets one only
        # hold that name's exclusive control queue (the other fails with RESOURCE_LOCKED).
        f"--hostname={host_name or 'machinery'}-{os.getpid()}@%h",
        f"--queues={QUEUE},{COMMANDS_QUEUE}" if commands else f"--queues={QUEUE}",
    ]
    try:
        machinery.celery.worker_main(argv)
    finally:
        machinery.stop()


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Say what would be created or updated, and change nothing.")
@_remote(required=False)
def apply(paths: Sequence[Path], dry_run: bool, client: Client | None) -> None:
    """Register the executables, services and workflows in PATHS (JSON files or folders of them).

    A definition that exists already is replaced when it differs. Executables go
    first, then services, so that a definition can use one defined beside it, and
    a workflow goes after those beside it that its steps run as children. With
    --dry-run nothing is written, and so nothing is type-checked: the store checks
    what it is given.
    """
    registry = _definitions(client)
    executables, services, workflows = [], [], []
    for path, doc in _documents(paths):
        if list(doc) == ["executables"]:  # several, as `import --from oto` writes them
            executables += [(path, executable) for executable in doc["executables"]]
        elif "path" in doc and "parameters" in doc:
            executables.append((path, doc))
        elif "address" in doc or doc.get("kind") == "command":
            services.append((path, doc))
        elif "services" in doc or "steps" in doc:
            workflows.append((path, doc))
        elif "data" not in doc:
            _fail(
                f"{path}: neither a service (no 'address', nor 'kind': 'command'), a workflow (no 'services' or"
                " 'steps') nor an executable (no 'path' and 'parameters')",
                EXIT_INVALID,
            )
    for path, doc in executables:
        _apply_one(path, doc, registry, "executable", dry_run)
    for path, doc in services:
        _apply_one(path, doc, registry, "service", dry_run)
    for path, doc in _children_first(workflows):
        _apply_one(path, doc, registry, "workflow", dry_run)


def _children_first(workflows: list[tuple[Path, dict[str, Any]]]) -> list[tuple[Path, dict[str, Any]]]:
    """The workflow documents, each after those among them that it runs as a child, in their order otherwise;
    a cycle is left for the registry to refuse."""
    by_name = {doc.get("name"): (path, doc) for path, doc in workflows}
    ordered: list[tuple[Path, dict[str, Any]]] = []
    seen: set[Path] = set()

    def place(path: Path, doc: dict[str, Any]) -> None:
        if path in seen:
            return
        seen.add(path)
        for step in doc.get("steps", []):
            child = step.get("workflow") if isinstance(step, dict) else None
            if child in by_name:
                place(*by_name[child])
        ordered.append((path, doc))

    for path, doc in workflows:
        place(path, doc)
    return ordered


@main.command()
@click.option(
    "--older-than",
    "days",
    required=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Days since the events were created.",
)
def purge(days: float) -> None:
    """Delete the finished events (completed, failed or cancelled) older than --older-than days."""
    click.echo(f"deleted {_machinery().events.purge(days * DAY)} finished events")


@main.command()
def recount() -> None:
    """Count the events by workflow and status again, reading them all, for /metrics and the totals of lists.

    On MongoDB, the counters are moved after each event's write: a process stopped between the two leaves them
    off by one, which this repairs. SQLite's are exact (kept in each write's own statement).
    """
    _machinery().store.recount_events()
    click.echo("counted the events again")


@main.command()
@click.option("--out", "-o", default=".", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@_remote(required=False)
def export(out: Path, client: Client | None) -> None:
    """Write every registered definition as a JSON file that `apply` accepts.

    The literal values of credential headers are written as "<redacted>", which `apply` refuses: define them
    as secret references, written as they are.
    """
    registry = _definitions(client)
    out.mkdir(parents=True, exist_ok=True)
    for executable in every(registry.list_executables):
        _write(out / f"executable-{executable.name}.json", executable_to_dict(executable))
    for service in every(registry.list_services):
        _write(out / f"service-{service.name}.json", service_to_dict(service))
    for workflow in every(registry.list_workflows):
        _write(out / f"workflow-{workflow.name}.json", workflow_to_dict(workflow))


@main.command("import")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--from", "source_format", type=click.Choice(["orchy", "gorchestrator", "oto"]), help="Default: detected."
)
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Default: standard output.")
def import_workflow(source: Path, source_format: str | None, out: Path | None) -> None:
    """Convert an Orchy workflow or a gorchestrator graph into a machinery workflow, or OTO's parameters (a JSON
    list) into an executable.

    What does not carry over (Orchy's JavaScript, the path OTO does not give) is said on standard error.
    """
    try:
        doc = json.loads(source.read_text())
    except ValueError as e:
        _fail(f"{source}: not JSON: {e}", EXIT_INVALID)
    with _about(f"{source}: cannot convert"):
        workflow, warnings = convert(doc, source_format)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    text = json.dumps(workflow, indent=4) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text)
        click.echo(f"wrote {out}", err=True)


@main.command("render")
@click.argument("key", metavar="WORKFLOW_OR_EVENT")
@click.option("--event", "of_event", is_flag=True, help="The argument is an event's id, not a workflow's id or name.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(FORMATS)),
    default="svg",
    show_default=True,
    help="dot is Graphviz's source: it needs no Graphviz binary.",
)
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Default: standard output.")
@_remote(required=False)
def render_graph(key: str, of_event: bool, fmt: str, out: Path | None, client: Client | None) -> None:
    """Draw a workflow (by id or name), or with --event how far an event has gone."""
    if client is not None:
        picture = client.event_graph(key, fmt) if of_event else client.workflow_graph(key, fmt)
    else:
        picture = _local_picture(key, of_event, fmt)
    if out is None:
        sys.stdout.buffer.write(picture)
    else:
        out.write_bytes(picture)
        click.echo(f"wrote {out}", err=True)


@main.command()
@click.argument("workflow")
@click.argument("data", default="{}")
@click.option("--wait", is_flag=True, help="Wait until the event ends, and say how; exits 4 if it failed.")
@click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(min=0), help="Seconds --wait waits.")
@click.option("--idempotency-key", help="Sending the same key again answers the event it created.")
@_remote(required=True)
def send(workflow: str, data: str, wait: bool, timeout: float, idempotency_key: str | None, client: Client) -> None:
    """Send an event to WORKFLOW (an id or a name) with DATA: a JSON object, @FILE holding one, or - (standard
    input). It prints the event's id; with --wait, the event once it has ended and its outputs."""
    ack = client.send(workflow, _object(data), idempotency_key=idempotency_key)
    if not wait:
        click.echo(ack.event_id)
        return
    _ended(client.wait(ack.event_id, timeout=timeout))


@main.command("run-task")
@click.argument("fleet")
@click.argument("task")
@click.argument("args", default="{}")
@click.option("--selector", "-l", multiple=True, metavar="KEY=VALUE", help="A label every workload chosen has.")
@click.option("--wait", is_flag=True, help="Wait until the run ends, and say how; exits 4 if it failed.")
@click.option("--timeout", default=600.0, show_default=True, type=click.FloatRange(min=0), help="Seconds --wait waits.")
@click.option("--idempotency-key", help="Sending the same key again answers the event it created.")
@_remote(required=True)
def run_task(
    fleet: str,
    task: str,
    args: str,
    selector: tuple[str, ...],
    wait: bool,
    timeout: float,
    idempotency_key: str | None,
    client: Client,
) -> None:
    """Run TASK of FLEET ad hoc with ARGS (a JSON object, @FILE or -) on every workload the --selector labels choose
    (all of them without one). It prints the id of the event running it; with --wait, the event once it has ended
    and its outputs: the results by workload, and the workloads skipped and failed."""
    labels = dict(label.partition("=")[::2] for label in selector)
    if any(not key for key in labels) or any("=" not in label for label in selector):
        raise click.BadParameter("a label is KEY=VALUE", param_hint="--selector")
    ack = client.run_task(fleet, task, _object(args), labels, idempotency_key=idempotency_key)
    if not wait:
        click.echo(ack.event_id)
        return
    _ended(client.wait(ack.event_id, timeout=timeout))


@main.command()
@click.option("--workflow", help="Only the events of this workflow (an id or a name).")
@click.option("--status", type=click.Choice([s.value for s in EventStatus]), help="Only the events in this status.")
@click.option("--data", help='Only the events whose data holds these values, a JSON object: {"customer": {"id": 7}}.')
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(min=1), help="At most this many.")
@_remote(required=True)
def events(workflow: str | None, status: str | None, data: str | None, limit: int, client: Client) -> None:
    """List the events, newest first, as a table."""
    page = client.list_events(
        workflow=workflow, status=status, data=_object(data) if data is not None else None, limit=limit
    )
    rows = [
        (e.id, f"{e.workflow} v{e.version}", e.status, _when(e.created_at), _when(e.updated_at)) for e in page.items
    ]
    _table(("EVENT", "WORKFLOW", "STATUS", "CREATED", "UPDATED"), rows)
    if page.total > len(page.items):
        click.echo(f"({len(page.items)} of {page.total}: --limit shows more)", err=True)


@main.command()
@click.argument("event_id")
@click.option("--watch", "-w", is_flag=True, help="Follow its steps as they move until it ends; exits 4 if it failed.")
@_remote(required=True)
def event(event_id: str, watch: bool, client: Client) -> None:
    """Show an event and its steps; a map step with a bar of its items done."""
    if not watch:
        _show(client.get_event(event_id))
        return
    shown: dict[str, tuple[str, ...]] = {}

    def moved(current: EventView) -> None:
        if not shown:
            _show(current)
        else:
            changed = [_step_row(s) for s in current.steps if _step_row(s) != shown[s.id]]
            if changed:
                _table(None, changed, prefix=_when(current.updated_at) + "  ")
        shown.update((s.id, _step_row(s)) for s in current.steps)

    _ended(client.wait(event_id, timeout=float("inf"), max_interval=1.0, on_change=moved), steps=False)


@main.command()
@click.argument("event_id")
@click.argument("name")
@click.argument("body", default="{}")
@_remote(required=True)
def signal(event_id: str, name: str, body: str, client: Client) -> None:
    """Send the signal NAME to an event, with BODY (a JSON object, @FILE or -) as the waiting step's output."""
    _said(client.signal(event_id, name, _object(body)))


def _event_action(name: str, does: str) -> None:
    @main.command(name, help=f"{does}.")
    @click.argument("event_id")
    @_remote(required=True)
    def act(event_id: str, client: Client) -> None:
        _said(getattr(client, name)(event_id))


_event_action("cancel", "Cancel an unfinished event")
_event_action("pause", "Pause an unfinished event: calls under way finish, and nothing starts until it is resumed")
_event_action("resume", "Resume a paused event")
_event_action("retry", "Run a failed event again from the steps that failed")


def _local_picture(key: str, of_event: bool, fmt: str) -> bytes:
    machinery = _machinery()
    if of_event:
        event = machinery.events.get(key)
        workflow = machinery.plans.for_event(event).workflow
        graph = event_graph(
            workflow, machinery.registry.services_of(workflow), event, machinery.events.item_counts(event)
        )
    else:
        workflow = machinery.registry.get_workflow(key)
        graph = workflow_graph(workflow, machinery.registry.services_of(workflow))
    return render(graph, fmt)


def _definitions(client: Client | None) -> Definitions:
    return client if client is not None else _machinery().registry


def _apply_one(path: Path, doc: dict[str, Any], registry: Definitions, kind: str, dry_run: bool) -> None:
    # Compared in clear: redacted, a changed credential would look unchanged.
    in_clear = functools.partial(service_to_dict, in_clear=True)
    formats: dict[str, tuple[Schema, Callable[[Any], dict[str, Any]]]] = {
        "executable": (ExecutableSchema(), executable_to_dict),
        "service": (ServiceSchema(), in_clear),
        "workflow": (WorkflowSchema(), workflow_to_dict),
    }
    schema, dump = formats[kind]
    get, add, replace = (getattr(registry, f"{verb}_{kind}") for verb in ("get", "add", "replace"))
    try:
        definition = schema.load(doc)
    except ValidationError as e:
        _fail(f"{path}: {json.dumps(e.messages)}", EXIT_INVALID)
    with _about(path):
        # A server answers credentials redacted: compared with the file's, they differ, and are sent again.
        try:
            current = get(definition.name)
        except NotFound:
            verb = "created"
        else:
            verb = "unchanged" if _comparable(dump(current)) == _comparable(dump(definition)) else "updated"
        if not dry_run and verb == "created":
            add(definition)
        elif not dry_run and verb == "updated":
            replace(definition.name, definition)
    click.echo(f"{kind} {definition.name} {'would be ' if dry_run and verb != 'unchanged' else ''}{verb}")


@contextmanager
def _about(subject: object) -> Iterator[None]:
    """Name ``subject`` (the file at fault) at the start of any machinery error's message."""
    try:
        yield
    except MachineryError as e:
        raise type(e)(f"{subject}: {e.message}", e.problems) from e


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without what the store numbers: ids, revisions, a workflow's version (an executable's
    version, a string, is the program's own, and stays)."""
    return {k: v for k, v in doc.items() if k not in ("id", "revision") and not (k == "version" and isinstance(v, int))}


def _documents(paths: Sequence[Path]) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in paths:
        for file in sorted(path.glob("*.json")) if path.is_dir() else [path]:
            try:
                doc = json.loads(file.read_text())
            except ValueError as e:
                _fail(f"{file}: not JSON: {e}", EXIT_INVALID)
            if not isinstance(doc, dict):
                _fail(f"{file}: a definition is a JSON object", EXIT_INVALID)
            yield file, doc


def _write(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(_comparable(doc), indent=4) + "\n")
    click.echo(f"wrote {path}")


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _object(text: str) -> dict[str, Any]:
    """A JSON object given on the command line: literally, as @FILE, or as - for standard input."""
    source = text[1:] if text.startswith("@") else "standard input" if text == "-" else "the argument"
    try:
        raw = Path(text[1:]).read_text() if text.startswith("@") else sys.stdin.read() if text == "-" else text
        value = json.loads(raw)
    except (OSError, ValueError) as e:
        _fail(f"{source}: not JSON: {e}", EXIT_INVALID)
    if not isinstance(value, dict):
        _fail(f"{source}: should be a JSON object", EXIT_INVALID)
    return value


def _said(event: EventView) -> None:
    click.echo(f"event {event.id} {event.status}")


def _show(event: EventView) -> None:
    click.echo(f"event {event.id} of {event.workflow} v{event.version}: {event.status}")
    click.echo(f"created {_when(event.created_at)}, updated {_when(event.updated_at)}")
    _table(("STEP", "KIND", "STATUS", "ATTEMPTS", ""), [_step_row(step) for step in event.steps])


def _ended(event: EventView, steps: bool = True) -> None:
    """Say how ``event`` ended, its outputs or its error; exit EXIT_EVENT_FAILED unless it completed."""
    if steps:
        _show(event)
    else:
        _said(event)
    if event.status is EventStatus.COMPLETED:
        click.echo(json.dumps(event.outputs, indent=2))
        return
    _fail(f"event {event.id} {event.status}: {(event.error or {}).get('message', 'no error said')}", EXIT_EVENT_FAILED)


def _step_row(step: StepView) -> tuple[str, ...]:
    kind = f"{step.kind} {step.service}" if step.service else step.kind
    if step.items is not None:
        detail = _bar(step.items)
    elif step.error:
        detail = str(step.error.get("message", step.error))
    elif step.route:
        detail = f"took {step.route}"
    else:
        detail = step.note or ""
    return step.id, kind, step.status, str(step.attempts), detail


def _bar(items: ItemCounts, width: int = 20) -> str:
    """A map step's items as a progress bar, with how many are in each status."""
    done = items.finished
    filled = width * done // items.total if items.total else width
    counts = ", ".join(f"{n} {status}" for status, n in sorted((items.counts or {}).items()) if n)
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{items.total}" + (f" ({counts})" if counts else "")


def _when(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _table(headers: Sequence[str] | None, rows: Sequence[Sequence[str]], prefix: str = "") -> None:
    """Rows in columns as wide as their widest cell; the last column is not padded."""
    lines = [tuple(headers)] if headers else []
    lines += [tuple(str(cell) for cell in row) for row in rows]
    if not lines:
        return
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]) - 1)]
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)] + [line[-1]]
        click.echo((prefix + "  ".join(cells)).rstrip())
