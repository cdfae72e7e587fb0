"""Converting the workflows of Orchy and gorchestrator into machinery's graph form, and OTO's parameters into
executables.

Both formats are untyped: the services a converted workflow calls must be
registered (with their contracts) before it is, and its inputs are typed
``any`` until a person narrows them. What cannot be converted faithfully is
said in the warnings, never dropped silently.

- Orchy: ``{name, rootAction, actions: [{id, type, name, parameters, next, ...}]}``. A user action
  becomes a service step named after the action; ``delay``, ``switch`` and ``wait`` become the steps of
  the same kind; references ``$.input.x`` and ``$.<id>.output.x`` become ``$.input.x`` and
  ``$.steps.<id>.x``. JavaScript actions cannot run here: each becomes an empty transform and a warning.
- gorchestrator: ``{name, digraph: flat n*n 0/1 list, nodes: [{id, name, engine, artifact, args}]}``,
  where ``digraph[r*n+c] == 1`` runs node c after node r. A node becomes a step calling the service named
  after its engine, with its artifact and args as constant inputs.
- OTO: a list of parameters ``[{flag, description, executable_tag, requires_root, requires_value,
  value_type, require_ids, interfer_ids}]``, the tag being ``"<name> - <version>"`` and the ids flags. Each
  tag becomes an executable; OTO's ``tuple`` values become strings, and as OTO's parameters do not say where
  the program is, its path is guessed as ``/usr/bin/<name>``: both are said in the warnings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from machinery.engine.errors import ConversionError

_ORCHY_REF = re.compile(r"^\$\.?(?P<step>[A-Za-z0-9_-]+)\.output\.(?P<path>[A-Za-z0-9_.-]+)$")
_ORCHY_INPUT = re.compile(r"^\$\.input\.(?P<path>[A-Za-z0-9_.-]+)$")


def detect(doc: Any) -> str:
    """Which format ``doc`` is in: ``orchy``, ``gorchestrator`` or ``oto``."""
    if isinstance(doc, list):
        return "oto"
    if "actions" in doc:
        return "orchy"
    if "digraph" in doc and "nodes" in doc:
        return "gorchestrator"
    raise ConversionError("neither an Orchy workflow ('actions') nor a gorchestrator graph ('digraph' and 'nodes')")


def convert(doc: Any, source: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """The machinery workflow (or, from OTO, executables) for ``doc``, and the warnings about what did not carry
    over."""
    kind = source or detect(doc)
    try:
        if kind == "oto":
            return from_oto(doc)
        if kind == "orchy":
            return from_orchy(doc)
        if kind == "gorchestrator":
            return from_gorchestrator(doc), []
    except KeyError as e:
        raise ConversionError(f"{e.args[0]!r} is missing") from e
    raise ConversionError(f"unknown format {kind!r}; expected orchy, gorchestrator or oto")


_OTO_VALUES = {"int": "int", "string": "string", "tuple": "string", "path": "path", "float": "float"}
_OTO_VALUES |= {"ip": "ip", "port": "port", "bool": "bool"}


def from_oto(doc: Any) -> tuple[dict[str, Any], list[str]]:
    """The executable of OTO's parameters, as ``{"executables": [...]}`` when they name several."""
    if not isinstance(doc, list) or not all(isinstance(p, Mapping) for p in doc):
        raise ConversionError("OTO's parameters are a JSON list of objects")
    warnings: list[str] = []
    executables: dict[str, dict[str, Any]] = {}
    for p in doc:
        tag = str(p["executable_tag"])
        name, _, version = (part.strip() for part in tag.partition(" - "))
        if tag not in executables:
            path = f"/usr/bin/{name}"
            warnings.append(f"{tag}: OTO does not say where the program is; its path is guessed as {path}")
            executables[tag] = {"name": name, "version": version, "path": path, "description": "", "parameters": []}
        value = None
        if p.get("requires_value"):
            given = str(p.get("value_type") or "string")
            value = _OTO_VALUES.get(given, "string")
            if given != value:
                warnings.append(f"{tag}: {p['flag']} takes a {given}, which machinery reads as a {value}")
        executables[tag]["parameters"].append(
            {
                "flag": p["flag"],
                "description": p.get("description") or "",
                "value": value,
                "requires_root": bool(p.get("requires_root")),
                "requires": [str(f) for f in p.get("require_ids") or ()],
                "conflicts": [str(f) for f in p.get("interfer_ids") or ()],
            }
        )
    found = list(executables.values())
    if not found:
        raise ConversionError("the list holds no parameter")
    return (found[0] if len(found) == 1 else {"executables": found}), warnings


def from_orchy(doc: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    warnings: list[str] = []
    inputs: dict[str, None] = {}
    steps = []
    for action in doc["actions"]:
        step_id = str(action["id"])
        routes = {str(k): [str(t) for t in _as_list(v)] for k, v in (action.get("next") or {}).items()}
        step: dict[str, Any] = {"id": step_id}
        name = action.get("name")
        if action.get("type") == "user":
            step |= {
                "service": name,
                "input": {k: _orchy_value(v, inputs) for k, v in action.get("parameters", {}).items()},
            }
            after_routes = routes
        elif name == "delay":
            step |= {"kind": "delay", "seconds": action.get("delaySeconds", 0)}
            after_routes = routes
        elif name == "switch":
            cases = {k: v for k, v in routes.items() if k != "default"}
            step |= {"kind": "switch", "expression": _orchy_expression(action["expression"], inputs), "cases": cases}
            if "default" in routes:
                step["default"] = routes["default"]
            after_routes = {}
        elif name == "wait":
            step |= {"kind": "wait", "signal": action["event"]}
            after_routes = routes
            if "timeoutSeconds" in action:
                step |= {"timeout": action["timeoutSeconds"], "on_timeout": routes.get("default", [])}
                after_routes = {k: v for k, v in routes.items() if k != "default"}
        elif name == "javascript":
            step |= {"kind": "transform", "compute": {}, "outputs": []}
            after_routes = routes
            warnings.append(
                f"action {step_id} runs JavaScript, which machinery does not run; it became an empty transform: "
                f"rewrite {action.get('expression', '')!r} as CEL expressions in its 'compute'"
            )
        else:
            raise ConversionError(f"action {step_id}: unknown system action {name!r}")
        steps.append((step, [t for targets in after_routes.values() for t in targets]))
    after: dict[str, list[str]] = {}
    for step, successors in steps:
        for successor in successors:
            after.setdefault(successor, []).append(step["id"])
    workflow_steps = [step | ({"after": after[step["id"]]} if step["id"] in after else {}) for step, _ in steps]
    workflow = {
        "name": doc["name"],
        "description": "Imported from Orchy",
        "inputs": [
            {"name": name, "type": "any", "description": "Imported from Orchy; narrow its type"} for name in inputs
        ],
        "outputs": [],
        "steps": workflow_steps,
    }
    return workflow, warnings


def from_gorchestrator(doc: Mapping[str, Any]) -> dict[str, Any]:
    nodes = doc["nodes"]
    n = len(nodes)
    matrix = doc["digraph"]
    if len(matrix) != n * n:
        raise ConversionError(f"the digraph has {len(matrix)} cells; {n} nodes need {n * n}")
    ids = [str(node.get("name") or f"node-{node['id']}") for node in nodes]
    steps = []
    for c, node in enumerate(nodes):
        after = [ids[r] for r in range(n) if matrix[r * n + c] == 1]
        step: dict[str, Any] = {
            "id": ids[c],
            "service": node.get("engine") or "shell",
            "input": {"artifact": node.get("artifact", ""), "args": list(node.get("args") or [])},
        }
        if after:
            step["after"] = after
        steps.append(step)
    return {
        "name": doc["name"],
        "description": "Imported from gorchestrator",
        "inputs": [],
        "outputs": [],
        "steps": steps,
    }


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _orchy_value(value: Any, inputs: dict[str, None]) -> Any:
    if not isinstance(value, str):
        return value
    if match := _ORCHY_INPUT.match(value):
        inputs[match["path"].split(".")[0]] = None
        return f"$.input.{match['path']}"
    if match := _ORCHY_REF.match(value):
        return f"$.steps.{match['step']}.{match['path']}"
    return value


def _orchy_expression(expression: str, inputs: dict[str, None]) -> str:
    """An Orchy JSONPath (``$.input.age``, ``$.1.output.key1``) as the CEL expression reading the same value."""
    if match := _ORCHY_INPUT.match(expression):
        inputs[match["path"].split(".")[0]] = None
        return f"input.{match['path']}"
    if match := _ORCHY_REF.match(expression):
        return f"steps['{match['step']}'].{match['path']}"
    raise ConversionError(f"the switch expression {expression!r} is not a reference machinery can read")
