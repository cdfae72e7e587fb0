"""The definition format the stores persist: every model survives the trip, and reading it needs no marshmallow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from machinery.codec import service_from_dict, service_to_dict, workflow_from_dict, workflow_to_dict
from machinery.engine.model import SecretRef
from machinery.validation import ServiceSchema, WorkflowSchema

SEED = Path(__file__).parent.parent / "fixtures" / "seed"
GRAPH = {
    "name": "every-kind",
    "inputs": [{"name": "items", "type": "array", "items": "string"}, {"name": "at", "type": "any"}],
    "steps": [
        {
            "id": "pick",
            "kind": "switch",
            "expression": "size(input.items) > 0",
            "cases": {"false": ["none"]},
            "default": ["go"],
        },
        {"id": "none", "kind": "succeed", "message": "nothing to do", "after": ["pick"]},
        {"id": "go", "kind": "delay", "until": "$.input.at", "after": ["pick"]},
        {"id": "each", "kind": "map", "service": "upper", "items": "$.input.items", "item": "text", "after": ["go"]},
        {
            "id": "ok",
            "kind": "wait",
            "signal": "approve",
            "timeout": 60,
            "on_timeout": ["late"],
            "outputs": [{"name": "who", "type": "string", "required": False, "default": "nobody"}],
            "after": ["each"],
        },
        {"id": "late", "kind": "fail", "message": "no approval", "after": ["ok"]},
        {"id": "sum", "kind": "transform", "compute": {"n": "size(steps.each.results)"}, "after": ["ok"]},
        {"id": "call", "service": "upper", "input": {"text": "$.steps.ok.who", "n": 3}, "after": ["sum"]},
    ],
}


@pytest.mark.parametrize("path", sorted(SEED.glob("service-*.json")), ids=lambda p: p.stem)
def test_a_service_reads_back_as_it_was_written(path: Path) -> None:
    service = ServiceSchema().load(json.loads(path.read_text()))
    assert service_from_dict(json.loads(json.dumps(service_to_dict(service)))) == service


@pytest.mark.parametrize("doc", [json.loads((SEED / "workflow-process-text.json").read_text()), GRAPH])
def test_a_workflow_of_either_form_and_every_step_kind_reads_back_as_it_was_written(doc: dict) -> None:
    workflow = WorkflowSchema().load(doc)
    assert workflow_from_dict(json.loads(json.dumps(workflow_to_dict(workflow)))) == workflow


def test_the_stores_and_the_codec_do_not_load_marshmallow() -> None:
    code = "import sys, machinery.store.sqlite, machinery.store.mongo; print('marshmallow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_a_secret_reference_reads_back_as_itself_and_a_literal_credential_only_in_clear() -> None:
    doc = {
        "name": "upper",
        "address": "http://upper.local/",
        "headers": {"Authorization": {"secret": "UPPER_TOKEN"}, "X-Api-Key": "s3cr3t", "X-Tenant": "acme"},
    }
    service = ServiceSchema().load(doc)
    assert service.endpoint.headers == {
        "Authorization": SecretRef("UPPER_TOKEN"),
        "X-Api-Key": "s3cr3t",
        "X-Tenant": "acme",
    }

    assert service_from_dict(json.loads(json.dumps(service_to_dict(service, in_clear=True)))) == service
    assert service_to_dict(service)["headers"] == doc["headers"] | {"X-Api-Key": "<redacted>"}
    assert "s3cr3t" not in repr(service)
