"""Registering services and workflows: nothing is stored that does not type-check.

Each write passes the store what it was checked against (service revisions,
the set of workflows using a service), so that a concurrent change makes the
store refuse the write instead of letting an unchecked combination in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from machinery.addresses import DEFAULT_GUARD, AddressGuard
from machinery.engine.checker import Node, check_nesting, check_service, check_workflow
from machinery.engine.errors import Conflict, InvalidDefinition, NotFound, Problem
from machinery.engine.expressions import Expressions
from machinery.engine.flags import check_combination, check_command, check_rules
from machinery.engine.fleets import Fleet
from machinery.engine.kinds import fleet as fleet_kind
from machinery.engine.kinds.workflow import contract, contract_key
from machinery.engine.model import CommandTarget, Executable, HttpEndpoint, Service, Workflow
from machinery.engine.plan import Settings
from machinery.engine.ports import FleetStore, Page, RegistryStore, every
from machinery.programs import commands_refusal


class Registry:
    """The services and workflows users register: every write is type-checked before the store keeps it, so a
    workflow never calls a service whose contract does not fit. The management API and the CLI write through it."""

    def __init__(
        self,
        store: RegistryStore,
        expressions: Expressions,
        guard: AddressGuard = DEFAULT_GUARD,
        max_workflow_depth: int = Settings.max_workflow_depth,
        commands_allowed: Sequence[Path] = (),
        fleets: FleetStore | None = None,
    ) -> None:
        self.store = store
        self.fleets = fleets
        self.expressions = expressions
        self.guard = guard
        self.max_workflow_depth = max_workflow_depth
        self.commands_allowed = tuple(commands_allowed)

    def add_service(self, service: Service) -> Service:
        executable_revision = self._check_service(service)
        return self.store.add_service(service, executable_revision=executable_revision)

    def get_service(self, name: str) -> Service:
        return self.store.get_service(name)

    def list_services(self, *, offset: int = 0, limit: int = 100) -> Page[Service]:
        return self.store.list_services(offset=offset, limit=limit)

    def services_of(self, workflow: Workflow) -> dict[str, Service]:
        """The services ``workflow`` calls, by name, and the contracts of the workflows it runs (see
        :func:`~machinery.engine.kinds.workflow.contract_key`), leaving out any removed since."""
        return self._services_of(workflow)[0] | self._contracts(workflow, None)

    def replace_service(self, name: str, service: Service) -> Service:
        """Replace a service unless that would break a workflow using it (Conflict naming each)."""
        _same_name("service", service.name, name)
        executable_revision = self._check_service(service)
        current = self.store.get_service(name)
        users = self.store.service_users(name)
        workflows = [self.store.get_workflow(user) for user in users]
        self._refuse_breaking(
            f"service '{name}'",
            [(w, self._services_of(w, override=service)[0] | self._contracts(w, None)) for w in workflows],
        )
        return self.store.replace_service(
            service, revision=current.revision, users=users, executable_revision=executable_revision
        )

    def check_fleet(self, name: str, fleet: Fleet | None) -> None:
        """Conflict if ``fleet``, in place of the fleet ``name`` (None: with no fleet of that name any more), would
        break a workflow running its tasks; the workflows of its ad hoc runs are left out, as they follow the fleet
        by themselves."""
        users = [
            w
            for w in every(self.store.list_workflows)
            if any(fleet_name == name for fleet_name, _ in w.fleet_tasks) and not fleet_kind.is_adhoc(w.name, name)
        ]
        if fleet is None and users:
            problems = [Problem(f"workflow '{w.name}' runs its tasks") for w in users]
            raise Conflict(f"fleet '{name}' is in use", problems)
        self._refuse_breaking(
            f"fleet '{name}'",
            [(w, self._services_of(w)[0] | self._contracts(w, None, fleet)) for w in users],
        )

    def delete_service(self, name: str) -> None:
        self.store.delete_service(name)

    def add_workflow(self, workflow: Workflow) -> Workflow:
        revisions = self._check_workflow(workflow)
        return self.store.add_workflow(workflow, services=revisions)

    def get_workflow(self, key: str) -> Workflow:
        return self.store.get_workflow(key)

    def list_workflows(self, *, offset: int = 0, limit: int = 100) -> Page[Workflow]:
        return self.store.list_workflows(offset=offset, limit=limit)

    def replace_workflow(self, key: str, workflow: Workflow) -> Workflow:
        current = self.store.get_workflow(key)
        if workflow.name != current.name:
            raise InvalidDefinition(
                "a workflow cannot be renamed",
                [Problem(f"the body names '{workflow.name}', the workflow is '{current.name}'", field="name")],
            )
        revisions = self._check_workflow(workflow)
        return self.store.replace_workflow(
            replace(workflow, id=current.id), version=current.version, services=revisions
        )

    def delete_workflow(self, key: str) -> None:
        self.store.delete_workflow(key)

    def add_executable(self, executable: Executable) -> Executable:
        self._check_executable(executable)
        return self.store.add_executable(executable)

    def get_executable(self, name: str) -> Executable:
        return self.store.get_executable(name)

    def list_executables(self, *, offset: int = 0, limit: int = 100) -> Page[Executable]:
        return self.store.list_executables(offset=offset, limit=limit)

    def replace_executable(self, name: str, executable: Executable) -> Executable:
        """Replace an executable unless that would break a command service running it (Conflict naming each)."""
        _same_name("executable", executable.name, name)
        self._check_executable(executable)
        current = self.store.get_executable(name)
        runners = self.executable_users(name)
        checks = {service.name: check_command(service, executable) for service in runners}
        _refuse_breaking(f"executable '{name}'", "service", checks)
        return self.store.replace_executable(
            executable, revision=current.revision, users=sorted(s.name for s in runners)
        )

    def delete_executable(self, name: str) -> None:
        """Remove an executable no command service runs (Conflict naming those that do)."""
        self.store.delete_executable(name)

    def executable_users(self, name: str) -> list[Service]:
        """The command services that run the executable ``name``, by name."""
        return [
            s
            for s in every(self.store.list_services)
            if isinstance(s.endpoint, CommandTarget) and s.endpoint.executable == name
        ]

    def check_flags(self, name: str, flags: Sequence[str]) -> tuple[str, ...]:
        """The argv order of ``flags`` for the executable ``name``; InvalidDefinition saying why they cannot go
        together."""
        order, problems = check_combination(self.store.get_executable(name), flags)
        if problems:
            raise InvalidDefinition(f"these flags of '{name}' cannot be used together", problems)
        return order

    def _check_executable(self, executable: Executable) -> None:
        problems = check_rules(executable)
        refused = commands_refusal(executable.path, self.commands_allowed)
        if refused:
            problems.insert(0, Problem(refused, field="path"))
        if problems:
            raise InvalidDefinition(f"executable '{executable.name}' is not valid", problems)

    def _check_service(self, service: Service) -> int | None:
        """Check ``service``; for a command service, the revision of the executable it was checked against."""
        problems = check_service(service)
        revision = None
        if isinstance(service.endpoint, HttpEndpoint):
            problems += self._refused(address=service.endpoint.address, healthcheck=service.healthcheck)
        else:
            try:
                executable = self.store.get_executable(service.endpoint.executable)
            except NotFound:
                what = f"no executable '{service.endpoint.executable}' is registered"
                problems.append(Problem(what, field="executable"))
            else:
                problems += check_command(service, executable)
                revision = executable.revision
        if problems:
            raise InvalidDefinition(f"service '{service.name}' is not valid", problems)
        return revision

    def _check_workflow(self, workflow: Workflow) -> dict[str, int]:
        """Check ``workflow``, how it nests among the workflows it runs and those running it, and that those
        running it still fit it; the revisions of the services it was checked with."""
        refused = self._refused(notify=workflow.notify)
        if refused:
            raise InvalidDefinition(f"workflow '{workflow.name}' is not valid", refused)
        services, missing = self._services_of(workflow)
        registered = self._registered(workflow)
        problems = check_workflow(workflow, services | self._contracts(workflow, registered), self.expressions)
        nesting = check_nesting(workflow, registered, self.max_workflow_depth)
        if nesting:
            raise InvalidDefinition(f"workflow '{workflow.name}' cannot run the workflows it runs", nesting + problems)
        if problems:
            what = f"unknown service{'s' if len(missing) > 1 else ''} " + ", ".join(missing) if missing else "problems"
            raise InvalidDefinition(f"workflow '{workflow.name}' does not type-check ({what})", problems)
        # Added too: a workflow deleted and added again may be run by workflows registered before.
        self._check_callers(workflow, registered)
        return {name: s.revision for name, s in services.items()}

    def _check_callers(self, workflow: Workflow, registered: dict[Node, Workflow]) -> None:
        """Conflict if ``workflow``, in place of its current version, would break a workflow running that."""
        replaced = {**registered, (workflow.name, None): workflow}
        callers = [
            caller
            for (name, version), caller in sorted(registered.items(), key=lambda item: item[0][0])
            if version is None and name != workflow.name and (workflow.name, None) in caller.children
        ]
        self._refuse_breaking(
            f"workflow '{workflow.name}'",
            [(caller, self._services_of(caller)[0] | self._contracts(caller, replaced)) for caller in callers],
        )

    def _refuse_breaking(self, changed: str, users: list[tuple[Workflow, dict[str, Service]]]) -> None:
        """Conflict naming each of the workflows ``users`` that does not type-check with what it is given."""
        checks = {workflow.name: check_workflow(workflow, services, self.expressions) for workflow, services in users}
        _refuse_breaking(changed, "workflow", checks)

    def _registered(self, workflow: Workflow) -> dict[Node, Workflow]:
        """Every registered workflow by its name (and None), and the versions pinned by their steps and by
        ``workflow``'s, by name and version: what :func:`check_nesting` looks through."""
        current = {w.name: w for w in every(self.store.list_workflows)}
        found: dict[Node, Workflow] = {(name, None): w for name, w in current.items()}
        pinned = [c for w in [*current.values(), workflow] for c in w.children if c[1] is not None]
        while pinned:
            name, version = node = pinned.pop()
            base = current.get(name)
            if node in found or base is None or base.id is None or version is None:
                continue
            try:
                found[node] = self.store.get_workflow_version(base.id, version)
            except NotFound:
                continue
            pinned += [c for c in found[node].children if c[1] is not None]
        return found

    def _contracts(
        self, workflow: Workflow, registered: dict[Node, Workflow] | None, fleet: Fleet | None = None
    ) -> dict[str, Service]:
        """The contracts of the workflows ``workflow`` runs, by their key, as ``registered`` holds them (with
        ``workflow`` itself as it is now); None looks each up in the store."""
        contracts = {}
        for name, version in workflow.children:
            if name == workflow.name and version is None:
                child: Workflow | None = workflow
            elif registered is not None:
                child = registered.get((name, version))
            else:
                child = self._lookup(name, version)
            if child is not None:
                key = contract_key(name, version)
                contracts[key] = contract(child, key)
        return contracts | self._fleet_contracts(workflow, fleet)

    def _fleet_contracts(self, workflow: Workflow, override: Fleet | None = None) -> dict[str, Service]:
        """The contracts of the fleets' tasks ``workflow`` runs, by their key, leaving out those not registered;
        ``override`` in place of the fleet of its name."""
        contracts = {}
        for fleet_name, task_name in workflow.fleet_tasks:
            try:
                if override is not None and override.name == fleet_name:
                    fleet: Fleet | None = override
                else:
                    fleet = self.fleets.get_fleet(fleet_name) if self.fleets is not None else None
            except NotFound:
                continue
            task = fleet.task(task_name) if fleet is not None else None
            if fleet is not None and task is not None:
                contracts[fleet_kind.contract_key(fleet_name, task_name)] = fleet_kind.contract(fleet, task)
        return contracts

    def _lookup(self, name: str, version: int | None) -> Workflow | None:
        try:
            current = self.store.get_workflow(name)
            if version is None or current.id is None:
                return current
            return self.store.get_workflow_version(current.id, version)
        except NotFound:
            return None

    def _refused(self, **urls: str | None) -> list[Problem]:
        """A problem for each URL, by field, whose host is a literal address the workers may not call."""
        reasons = {name: self.guard.check_url(url) for name, url in urls.items() if url}
        return [Problem(f"the workers may not call it: {why}", field=name) for name, why in reasons.items() if why]

    def _services_of(self, workflow: Workflow, override: Service | None = None) -> tuple[dict[str, Service], list[str]]:
        services: dict[str, Service] = {}
        missing: list[str] = []
        for name in workflow.service_names:
            if override is not None and name == override.name:
                services[name] = override
                continue
            try:
                services[name] = self.store.get_service(name)
            except NotFound:
                missing.append(f"'{name}'")
        return services, missing


def _same_name(what: str, given: str, path: str) -> None:
    if given != path:
        raise InvalidDefinition(
            f"a{'n' if what[0] in 'aeiou' else ''} {what} cannot be renamed",
            [Problem(f"the body names '{given}', the path '{path}'", field="name")],
        )


def _refuse_breaking(subject: str, what: str, checks: dict[str, list[Problem]]) -> None:
    """Conflict if changing ``subject`` breaks any of the definitions (``what``s) in ``checks``, each with the
    problems its check found."""
    broken = [f"'{name}'" for name, found in checks.items() if found]
    if broken:
        problems = [
            replace(p, message=f"{what} '{name}': {p.message}") for name, found in checks.items() for p in found
        ]
        plural = "s" if len(broken) > 1 else ""
        raise Conflict(f"changing {subject} would break {what}{plural} {', '.join(broken)}", problems)
