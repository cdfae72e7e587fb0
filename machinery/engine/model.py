"""Definitions: fields, services and workflows, as frozen plain data.

A workflow is always held as a graph of steps. The linear form of the seed
(``services: [a, b, c]``) is a shorthand that :func:`linear_steps` expands:
each step depends on the one before it, takes its inputs from the context by
name and writes its outputs back into the context under their own names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from machinery.engine.errors import InvalidDefinition
from machinery.engine.retry import RetryPolicy
from machinery.engine.types import FieldType

_NO_DEFAULT = object()


@dataclass(frozen=True)
class Field:
    """A named, typed value in a contract: a service's or a workflow's input or output."""

    name: str
    type: FieldType
    description: str = ""
    required: bool = True
    default: Any = _NO_DEFAULT
    searchable: bool = False
    """A workflow input whose value the stores index, so that a search of events by it answers at once."""

    @property
    def has_default(self) -> bool:
        return self.default is not _NO_DEFAULT

    @property
    def always_present(self) -> bool:
        """Whether a value for this field exists once it has been accepted."""
        return self.required or self.has_default


SYNC = "sync"
CALLBACK = "callback"
"""How a service answers (:attr:`Service.mode`)."""

SECRET_NAME = re.compile(r"^[A-Za-z0-9_]{1,100}$")
"""A secret's name: a file's name in a directory and the end of an environment variable's, with no way out of either."""


@dataclass(frozen=True)
class SecretRef:
    """A header value kept out of the definitions: the secret ``name``, resolved by the worker when it calls."""

    name: str

    def __post_init__(self) -> None:
        if not SECRET_NAME.match(self.name):
            raise InvalidDefinition(
                f"{self.name!r} is no secret's name: it holds only letters, digits and '_' (100 at most)"
            )


HeaderValue = str | SecretRef
"""A header's value as defined: a literal string, or a reference to a secret."""

REDACTED = "<redacted>"
"""What a read shows in place of a credential header's literal value."""
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_CREDENTIAL_WORDS = ("token", "secret", "key", "password")


def redact(headers: Mapping[str, HeaderValue]) -> dict[str, HeaderValue]:
    """The headers as a read shows them: a credential's literal value is :data:`REDACTED`, a secret reference
    stays, as it reveals nothing. A credential is ``Authorization``, ``Proxy-Authorization``, ``Cookie``,
    ``Set-Cookie``, or a header whose name holds ``token``, ``secret``, ``key`` or ``password``, in any case."""
    return {
        name: REDACTED if isinstance(value, str) and _is_credential(name) else value for name, value in headers.items()
    }


def _is_credential(header: str) -> bool:
    name = header.lower()
    return name in _CREDENTIAL_HEADERS or any(word in name for word in _CREDENTIAL_WORDS)


@dataclass(frozen=True)
class HttpEndpoint:
    """How to call an HTTP service: the declared inputs go out as a JSON object, with ``headers``."""

    address: str
    method: str = "POST"
    # Out of repr, as literal values may be credentials: a logged or raised endpoint shows none.
    headers: Mapping[str, HeaderValue] = field(default_factory=dict, repr=False)
    kind: str = "http"


VALUE_TYPES = ("string", "int", "float", "bool", "path", "ip", "port", "enum")
"""The types of a command-line parameter's value; ``enum`` takes one of the parameter's ``choices``."""


@dataclass(frozen=True)
class Parameter:
    """One parameter of an executable: a flag (``-o``, ``--format``) or, if it starts with no ``-``, a positional.

    ``value`` is the type of the value it takes (one of :data:`VALUE_TYPES`), None for a flag that takes
    none; a positional always takes one. ``requires`` names the flags it cannot go without, ``conflicts``
    those it cannot stand beside (the relation is symmetric, whichever side declares it).
    """

    flag: str
    description: str = ""
    value: str | None = None
    choices: tuple[str, ...] = ()
    requires_root: bool = False
    requires: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()

    @property
    def positional(self) -> bool:
        return not self.flag.startswith("-")


@dataclass(frozen=True)
class Executable:
    """A program the command workers may run: where it is, and the parameters it takes with their rules."""

    name: str
    path: str
    version: str = ""
    description: str = ""
    parameters: tuple[Parameter, ...] = ()
    id: str | None = None
    revision: int = 0

    def parameter(self, flag: str) -> Parameter | None:
        return next((p for p in self.parameters if p.flag == flag), None)


@dataclass(frozen=True)
class Argument:
    """One parameter a command service passes: with no value, a ``value`` fixed in the definition, or the value of
    the service's ``input`` of that name."""

    flag: str
    value: Any = None
    input: str | None = None


COMMAND_OUTPUTS = {"exit_code": "int", "stdout": "string", "stderr": "string", "truncated": "bool"}
"""What a command service in ``text`` mode may declare as outputs, with their types."""


@dataclass(frozen=True)
class CommandTarget:
    """How to run a command service: ``executable`` with ``arguments``, no shell.

    ``stdin`` names the input written to the program's standard input. With ``stdout`` ``text`` the outputs are
    among :data:`COMMAND_OUTPUTS`; with ``json`` standard output is read as a JSON object, checked against the
    declared outputs. ``environment`` is all the program's environment; an exit code in ``transient_exit_codes``
    is retried under the service's retry policy, any other but 0 fails the step.
    """

    executable: str
    arguments: tuple[Argument, ...] = ()
    stdin: str | None = None
    stdout: str = "text"
    environment: Mapping[str, str] = field(default_factory=dict)
    transient_exit_codes: tuple[int, ...] = ()
    kind: str = "command"


Target = HttpEndpoint | CommandTarget
"""What a service's kind calls: an HTTP endpoint or a command."""


@dataclass(frozen=True)
class Service:
    """A registered microservice and its typed contract."""

    name: str
    endpoint: Target
    inputs: tuple[Field, ...] = ()
    outputs: tuple[Field, ...] = ()
    description: str = ""
    timeout: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    concurrency: int | None = None
    """At most this many calls at once, over every event and worker; None for no limit."""
    healthcheck: str | None = None
    """A URL answering a GET with 2xx while the service is up; probed every so often if given."""
    mode: str = "sync"
    """``sync``: its answer holds its outputs. ``callback``: it answers 202 at once, and later posts its outputs
    (or its error) to the callback URL it was given."""
    callback_timeout: float = 3600.0
    """Seconds a callback service has to post its result, after which the call counts as timed out."""
    heartbeat: float | None = None
    """Seconds a callback service may go without posting a heartbeat while it works; None for no heartbeat."""
    idempotent: bool = True
    """Whether a call may be made again after its worker was lost mid-call; if not, the step fails instead."""
    id: str | None = None
    revision: int = 0

    @property
    def kind(self) -> str:
        return self.endpoint.kind


@dataclass(frozen=True)
class Ref:
    """Where a step input comes from.

    ``source`` is ``context`` (the running context), ``input`` (the event's
    data as accepted), ``step`` (an earlier step's outputs, ``step`` naming it)
    or ``const`` (``value`` itself). ``path`` goes into the value, field by field.
    """

    source: str
    path: tuple[str, ...] = ()
    step: str | None = None
    value: Any = None

    def __str__(self) -> str:
        if self.source == "const":
            return repr(self.value)
        root = f"$.steps.{self.step}" if self.source == "step" else f"$.{self.source}"
        return ".".join((root, *self.path))


SERVICE = "service"
SWITCH = "switch"
DELAY = "delay"
WAIT = "wait"
TRANSFORM = "transform"
MAP = "map"
WORKFLOW = "workflow"
FLEET = "fleet"
FAIL = "fail"
SUCCEED = "succeed"
DISCARD = "discard"
"""A map step's ``results`` when it keeps none of its items' answers."""


@dataclass(frozen=True)
class Step:
    """One node of a workflow graph.

    A ``service`` step calls ``service``. ``input`` maps each service input to
    a :class:`Ref`; an input it does not name is read from the context under
    its own name. ``output`` renames outputs on their way into the context;
    the others keep their names. The other kinds use the fields named after them:

    - ``switch``: ``expression`` picks a route among ``cases`` (value -> steps), else ``default``.
    - ``delay``: waits ``seconds``, or ``until`` a time (ISO 8601 or epoch seconds).
    - ``wait``: waits for the signal ``signal``, whose body is its output (``outputs``);
      after ``timeout`` seconds it takes the route ``on_timeout`` instead of its dependents.
    - ``transform``: ``compute`` maps each of its ``outputs`` to an expression.
    - ``map``: calls ``service`` once per element of ``items``, passing it as input ``item``,
      at most ``concurrency`` at once; its output ``results`` lists the answers in order,
      unless ``results`` is ``discard`` (then it has no outputs). With ``workflow`` in place of
      ``service``, each item runs that workflow as a child event, and its answer is the child's outputs.
    - ``workflow``: runs the registered workflow ``workflow`` (its ``version`` if pinned, else its current one) as a
      child event, its inputs and outputs mapped as a service step's are; its outputs are the child's.
    - ``fleet``: runs the task ``task`` of the fleet ``fleet`` on every workload whose labels match ``selector``
      (literal labels, or a reference to an object of them), its arguments mapped as a service's inputs are, at
      most ``concurrency`` at once; its outputs are the results by workload and the workloads skipped and failed,
      and it fails if more than ``max_failed`` failed (None: however many).
    - ``fail`` and ``succeed``: end the event, saying ``message``.
    """

    id: str
    kind: str = SERVICE
    service: str | None = None
    after: tuple[str, ...] = ()
    input: Mapping[str, Ref] = field(default_factory=dict)
    output: Mapping[str, str] = field(default_factory=dict)
    expression: str | None = None
    cases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    default: tuple[str, ...] = ()
    seconds: float | None = None
    until: Ref | None = None
    signal: str | None = None
    timeout: float | None = None
    on_timeout: tuple[str, ...] = ()
    outputs: tuple[Field, ...] = ()
    compute: Mapping[str, str] = field(default_factory=dict)
    items: Ref | None = None
    item: str | None = None
    concurrency: int = 10
    results: str = "keep"
    message: str = ""
    workflow: str | None = None
    version: int | None = None
    fleet: str | None = None
    task: str | None = None
    selector: Mapping[str, str] | Ref = field(default_factory=dict)
    max_failed: int | None = None

    def input_ref(self, name: str) -> Ref:
        return self.input.get(name) or Ref("context", (name,))

    def context_name(self, output: str) -> str:
        return self.output.get(output, output)

    @property
    def items_ref(self) -> Ref:
        """Where a map step's array comes from: ``items``, else the context's ``items``."""
        return self.items or Ref("context", ("items",))

    @property
    def routes(self) -> Mapping[str, tuple[str, ...]]:
        """The routes this step chooses among once it completes; empty for steps that choose none."""
        if self.kind == SWITCH:
            return {**self.cases, **({"default": self.default} if self.default else {})}
        if self.kind == WAIT and self.on_timeout:
            return {"timeout": self.on_timeout}
        return {}


@dataclass(frozen=True)
class Workflow:
    """A registered workflow: a typed contract and the graph of steps that fulfils it.

    ``linear`` remembers that it was written in the seed's linear form, so that
    it is exported the way it was written.
    """

    name: str
    steps: tuple[Step, ...]
    inputs: tuple[Field, ...] = ()
    outputs: tuple[Field, ...] = ()
    description: str = ""
    linear: bool = False
    timeout: float | None = None
    """Seconds an event has from its acceptance to its end; past them no step starts, and the event fails."""
    notify: str | None = None
    """A URL that is sent each event, as a POST, once it has ended."""
    id: str | None = None
    version: int = 1

    @property
    def service_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(step.service for step in self.steps if step.service is not None))

    @property
    def fleet_tasks(self) -> tuple[tuple[str, str], ...]:
        """The fleets' tasks its ``fleet`` steps run, each as the fleet's name and the task's."""
        return tuple(dict.fromkeys((s.fleet, s.task) for s in self.steps if s.fleet is not None and s.task is not None))

    @property
    def children(self) -> tuple[tuple[str, int | None], ...]:
        """The workflows its ``workflow`` steps run, each as a name and the version pinned (None: the current one)."""
        return tuple(dict.fromkeys((s.workflow, s.version) for s in self.steps if s.workflow is not None))


def linear_steps(services: list[str]) -> tuple[Step, ...]:
    """Expand the linear form: one step per service, each after the one before.

    A service named twice gets a numbered id the second time (``upper-2``).
    """
    steps: list[Step] = []
    seen: dict[str, int] = {}
    for name in services:
        seen[name] = seen.get(name, 0) + 1
        step_id = name if seen[name] == 1 else f"{name}-{seen[name]}"
        after = (steps[-1].id,) if steps else ()
        steps.append(Step(id=step_id, kind=SERVICE, service=name, after=after))
    return tuple(steps)
