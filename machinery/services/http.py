"""Calling HTTP services: declared inputs out as a JSON object, declared outputs back.

Built on urllib3, the connection pool under requests: the engine does its own
retries and needs no sessions, cookies or redirects, and a call through the
pool costs about half what the same call costs through requests.

Timeouts, connection errors, 408, 429 and 5xx are transient; any other 4xx
and an answer that is not JSON are permanent.
"""

from __future__ import annotations

import json
from typing import Any

import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, ProtocolError, TimeoutError

from machinery.engine.calls import Call, CallFailure, ErrorKind
from machinery.engine.errors import InvalidConfig
from machinery.services.secrets import Secrets

TRANSIENT_STATUSES = frozenset({408, 429})
_BODY_PREVIEW = 300


class HttpCaller:
    """The caller of services of kind ``http``: it sends a step's inputs to the service's endpoint and reads back
    its outputs, or a CallFailure saying whether a retry may help. One pool of connections serves every thread."""

    def __init__(self, pool_size: int = 32, secrets: Secrets | None = None) -> None:
        self.pool = urllib3.PoolManager(maxsize=pool_size, retries=False)
        self.secrets = secrets or Secrets()

    def call(self, call: Call, event_id: str) -> tuple[Any, CallFailure | None]:
        service = call.service
        endpoint = service.endpoint
        try:
            resolved = self.secrets.resolve(endpoint.headers)
        except InvalidConfig as e:
            return None, CallFailure(e.message, False, ErrorKind.CONFIG)
        headers = {
            **resolved,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Idempotency-Key": call.idempotency_key,
            "X-Machinery-Event": event_id,
            "X-Machinery-Step": call.step_id,
            "X-Machinery-Attempt": str(call.attempt),
        }
        where = f"{endpoint.method} {endpoint.address}"
        try:
            response = self.pool.request(
                endpoint.method,
                endpoint.address,
                body=json.dumps(call.inputs).encode(),
                headers=headers,
                timeout=urllib3.Timeout(total=service.timeout),
                redirect=False,
            )
        except NewConnectionError as e:
            return None, CallFailure(f"{where} could not be reached: {_reason(e)}", True, ErrorKind.CONNECTION)
        except TimeoutError:
            return None, CallFailure(f"{where} did not answer within {service.timeout:g} s", True, ErrorKind.TIMEOUT)
        except (ProtocolError, HTTPError) as e:
            return None, CallFailure(f"{where} could not be reached: {_reason(e)}", True, ErrorKind.CONNECTION)
        status = response.status
        if status >= 300:
            transient = status >= 500 or status in TRANSIENT_STATUSES
            body = response.data[:_BODY_PREVIEW].decode("utf-8", "replace")
            return None, CallFailure(
                f"{where} answered {status}: {body}", transient, ErrorKind.HTTP, {"status_code": status}
            )
        if not response.data:  # 204, or an empty 200: no outputs
            return {}, None
        try:
            return json.loads(response.data), None
        except ValueError:
            body = response.data[:_BODY_PREVIEW].decode("utf-8", "replace")
            return None, CallFailure(
                f"{where} answered {status} with a body that is not JSON: {body!r}", False, ErrorKind.JSON
            )


def _reason(error: Exception) -> str:
    reason = getattr(error, "reason", None) or error
    return str(reason).split(": ", 1)[-1]
