"""The ``machinery`` command line."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click
from celery.signals import setup_logging
from marshmallow import Schema, ValidationError

from machinery import logs
from machinery.bootstrap import DAY, Config, Machinery
from machinery.codec import executable_to_dict, service_to_dict, workflow_to_dict
from machinery.engine.errors import ConversionError, InvalidConfig, MachineryError, NotFound
from machinery.engine.ports import every
from machinery.importers import convert
from machinery.registry import Registry
from machinery.render import FORMATS, event_graph, render, workflow_graph
from machinery.server import DEFAULT_THREADS, Server, default_workers
from machinery.validation import ExecutableSchema, ServiceSchema, WorkflowSchema
from machinery.worker import COMMANDS_QUEUE, QUEUE

log = logging.getLogger(__name__)

EXIT_INVALID = 2
"""What it was given cannot be read: a setting, a file, a document to convert."""
EXIT_REFUSED = 3
"""What it was given was read, but machinery refuses it, or cannot do what it asks."""

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
            _fail(f"{e.message}{details}", next(EXIT_CODES[c] for c in type(e).__mro__ if c in EXIT_CODES))


def _machinery() -> Machinery:
    return Machinery(Config.from_env())


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """machinery: chain typed HTTP microservices into workflows, and run events through them.

    Configuration comes from the environment: MACHINERY_DATA_DIR (the embedded store),
    MACHINERY_MONGO_URI (use MongoDB instead), MACHINERY_BROKER_URL (run workers apart),
    MACHINERY_API_TOKENS (require a bearer token); the README lists them all.
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
def serve(host: str, port: int, workers: int | None, threads: int) -> None:
    """Serve the API and dashboard with gunicorn; without a broker, run the workers in its one process too.

    SIGTERM stops it gracefully: it accepts no more connections, and the requests under way have
    30 s to finish.
    """
    config = Config.from_env()
    logs.configure(config.log_format)
    if config.embedded_worker:
        if workers not in (None, 1):
            log.warning("without MACHINERY_BROKER_URL the workers share one process's memory: serving with 1 process")
        workers = 1
    Server(config, host, port, workers or default_workers(), threads).run()


@main.command()
@click.option("--concurrency", "-c", type=int, help="Worker processes or threads (default: MACHINERY_CONCURRENCY).")
@click.option("--pool", default="prefork", show_default=True, type=click.Choice(["prefork", "threads", "solo"]))
@click.option("--loglevel", default="INFO", show_default=True)
@click.option(
    "--commands",
    is_flag=True,
    help="Run command services too (their own queue), for programs under MACHINERY_COMMANDS_ALLOWED.",
)
@click.option("--allow-root", is_flag=True, help="With --commands: run parameters that require root.")
def worker(concurrency: int | None, pool: str, loglevel: str, commands: bool, allow_root: bool) -> None:
    """Run a Celery worker (and a sweeper) against MACHINERY_BROKER_URL."""
    if allow_root and not commands:
        raise click.UsageError("--allow-root is for workers that run commands: add --commands")
    config = dataclasses.replace(Config.from_env(), run_commands=commands, commands_root=allow_root)
    if commands and not config.commands_allowed:
        raise click.UsageError("--commands runs only programs under MACHINERY_COMMANDS_ALLOWED: set it")
    machinery = Machinery(config)
    logs.configure(machinery.config.log_format, loglevel.upper())
    # Logging is configured: Celery's worker must leave it as it is.
    setup_logging.connect(lambda **_: None, weak=False)
    if machinery.config.embedded_worker:
        raise click.UsageError(
            "set MACHINERY_BROKER_URL (redis://... or amqp://...) to run workers apart; "
            "without a broker `machinery serve` runs them in its own process"
        )
    machinery.start_sweeper()
    argv = [
        *(["--quiet"] if machinery.config.log_format == "json" else []),  # no banner amid the JSON lines
        "worker",
        f"--loglevel={loglevel}",
        f"--pool={pool}",
        f"--concurrency={concurrency or machinery.config.concurrency}",
        f"--queues={QUEUE},{COMMANDS_QUEUE}" if commands else f"--queues={QUEUE}",
    ]
    try:
        machinery.celery.worker_main(argv)
    finally:
        machinery.stop()


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def apply(paths: Sequence[Path]) -> None:
    """Register the executables, services and workflows in PATHS (JSON files or folders of them).

    A definition that exists already is replaced when it differs. Executables go
    first, then services, so that a definition can use one defined beside it.
    """
    registry = _machinery().registry
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
        _apply_one(path, doc, registry, "executable")
    for path, doc in services:
        _apply_one(path, doc, registry, "service")
    for path, doc in workflows:
        _apply_one(path, doc, registry, "workflow")


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
@click.option("--out", "-o", default=".", show_default=True, type=click.Path(file_okay=False, path_type=Path))
def export(out: Path) -> None:
    """Write every registered definition as a JSON file that `apply` accepts.

    The literal values of credential headers are written as "<redacted>", which `apply` refuses: define them
    as secret references, written as they are.
    """
    registry = _machinery().registry
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
def render_graph(key: str, of_event: bool, fmt: str, out: Path | None) -> None:
    """Draw a workflow (by id or name), or with --event how far an event has gone."""
    machinery = _machinery()
    if of_event:
        event = machinery.events.get(key)
        workflow = machinery.plans.for_event(event).workflow
        graph = event_graph(workflow, machinery.registry.services_of(workflow), event)
    else:
        workflow = machinery.registry.get_workflow(key)
        graph = workflow_graph(workflow, machinery.registry.services_of(workflow))
    picture = render(graph, fmt)
    if out is None:
        click.get_binary_stream("stdout").write(picture)
    else:
        out.write_bytes(picture)
        click.echo(f"wrote {out}", err=True)


def _apply_one(path: Path, doc: dict[str, Any], registry: Registry, kind: str) -> None:
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
        try:
            current = get(definition.name)
        except NotFound:
            add(definition)
            verb = "created"
        else:
            verb = "unchanged" if _comparable(dump(current)) == _comparable(dump(definition)) else "updated"
            if verb == "updated":
                replace(definition.name, definition)
    click.echo(f"{kind} {definition.name} {verb}")


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
