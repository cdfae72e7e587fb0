"""Calling HTTP services: declared inputs out as a JSON object, declared outputs back.

Built on urllib3, the connection pool under requests: the engine does its own
retries and needs no sessions, cookies or redirects, and a call through the
pool costs about half what the same call costs through requests.

Timeouts, connection errors, 408, 429 and 5xx are transient; any other 4xx,
an answer that is not JSON, one larger than ``max_response_bytes`` and an
address the guard refuses (see :mod:`machinery.addresses`) are permanent.
Answers are streamed: no more than the limit and one byte is read.

A callback service (``"mode": "callback"``) is sent its callback URL in the
``X-Machinery-Callback`` header; its 202 means it took the call, and will post
the result there.
"""

from __future__ import annotations

import json
from typing import Any

import urllib3
from urllib3 import BaseHTTPResponse, HTTPHeaderDict
from urllib3.exceptions import HTTPError, NewConnectionError, ProtocolError, TimeoutError
from urllib3.util import parse_url

from machinery.addresses import DEFAULT_GUARD, AddressGuard, RefusedAddress
from machinery.engine.calls import ACCEPTED, Call, CallFailure, ErrorKind, callback_token
from machinery.engine.errors import InvalidConfig
from machinery.engine.model import CALLBACK, HttpEndpoint
from machinery.services.secrets import Secrets

TRANSIENT_STATUSES = frozenset({408, 429})
ACCEPTED_STATUS = 202
"""A callback service's answer when it has taken a call, to answer later at its callback URL."""
_BODY_PREVIEW = 300
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024


class GuardedPool:
    """A pool of connections to the addresses ``guard`` allows, and only those, whatever a name resolves to.

    A name is resolved once and checked, and the connection is made to the address checked, with the name in
    the Host header and, over TLS, in SNI and the certificate's check: a DNS answer that changes between the
    check and the connection (DNS rebinding) cannot lead it elsewhere. Redirects are never followed.
    """

    def __init__(self, guard: AddressGuard, pool_size: int = 10) -> None:
        self.guard = guard
        self.manager = urllib3.PoolManager(maxsize=pool_size, retries=False)

    def request(
        self, method: str, url: str, timeout: urllib3.Timeout, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> BaseHTTPResponse:
        """The response to a request, its body not read yet (see :func:`read_at_most`).

        Raises RefusedAddress if the guard refuses the host, OSError if its name does not resolve, and urllib3's
        errors if the request fails.
        """
        parsed = parse_url(url)
        host = parsed.host or ""
        address = self.guard.address_of(host)
        name = host.strip("[]")
        tls = {"server_hostname": name, "assert_hostname": name} if parsed.scheme == "https" else None
        pool = self.manager.connection_from_host(str(address), parsed.port, parsed.scheme, pool_kwargs=tls)
        sent = HTTPHeaderDict(headers or {})
        sent.setdefault("Host", parsed.netloc or host)
        return pool.urlopen(
            method,
            parsed.request_uri,
            body=body or None,
            headers=sent,
            timeout=timeout,
            redirect=False,
            retries=False,
            preload_content=False,
        )


class HttpCaller:
    """The caller of services of kind ``http``: it sends a step's inputs to the service's endpoint and reads back
    its outputs, or a CallFailure saying whether a retry may help. One pool of connections serves every thread."""

    def __init__(
        self,
        pool_size: int = 32,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        guard: AddressGuard = DEFAULT_GUARD,
        secrets: Secrets | None = None,
        public_url: str | None = None,
    ) -> None:
        self.pool = GuardedPool(guard, pool_size)
        self.max_response_bytes = max_response_bytes
        self.secrets = secrets or Secrets()
        self.public_url = public_url.rstrip("/") if public_url else None

    def call(self, call: Call, event_id: str) -> tuple[Any, CallFailure | None]:
        service = call.service
        endpoint = service.endpoint
        if not isinstance(endpoint, HttpEndpoint):
            return None, CallFailure(f"service '{service.name}' is not an HTTP service", False, ErrorKind.CONFIG)
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
        if service.mode == CALLBACK:
            if self.public_url is None:
                message = "MACHINERY_PUBLIC_URL is not set: a callback service cannot be told where to answer"
                return None, CallFailure(message, False, ErrorKind.CONFIG)
            token = callback_token(event_id, call.step_id, call.token)
            headers["X-Machinery-Callback"] = f"{self.public_url}/callbacks/{token}"
        where = f"{endpoint.method} {endpoint.address}"
        try:
            response = self.pool.request(
                endpoint.method,
                endpoint.address,
                body=json.dumps(call.inputs).encode(),
                headers=headers,
                timeout=urllib3.Timeout(total=service.timeout),
            )
            data = read_at_most(response, self.max_response_bytes)
        except RefusedAddress as e:
            return None, CallFailure(f"{where} was not called: {e}", False, ErrorKind.ADDRESS)
        except NewConnectionError as e:
            return None, CallFailure(f"{where} could not be reached: {_reason(e)}", True, ErrorKind.CONNECTION)
        except TimeoutError:
            return None, CallFailure(f"{where} did not answer within {service.timeout:g} s", True, ErrorKind.TIMEOUT)
        except (ProtocolError, HTTPError, OSError) as e:  # OSError: the name does not resolve
            return None, CallFailure(f"{where} could not be reached: {_reason(e)}", True, ErrorKind.CONNECTION)
        status = response.status
        if status >= 300:
            transient = status >= 500 or status in TRANSIENT_STATUSES
            body = (data or b"")[:_BODY_PREVIEW].decode("utf-8", "replace")
            return None, CallFailure(
                f"{where} answered {status}: {body}", transient, ErrorKind.HTTP, {"status_code": status}
            )
        if data is None:
            limit = self.max_response_bytes
            declared = response.length_remaining or 0
            seen = f"{declared} bytes by its Content-Length" if declared > limit else f"more than {limit} bytes"
            return None, CallFailure(
                f"{where} answered a body over the limit of {limit} bytes (MACHINERY_MAX_RESPONSE_BYTES): {seen}",
                False,
                ErrorKind.SIZE,
            )
        if service.mode == CALLBACK and status == ACCEPTED_STATUS:
            return ACCEPTED, None
        if not data:  # 204, or an empty 200: no outputs
            return {}, None
        try:
            return json.loads(data), None
        except RecursionError:
            return None, CallFailure(
                f"{where} answered {status} with JSON nested too deep to read", False, ErrorKind.JSON
            )
        except ValueError:
            body = data[:_BODY_PREVIEW].decode("utf-8", "replace")
            return None, CallFailure(
                f"{where} answered {status} with a body that is not JSON: {body!r}", False, ErrorKind.JSON
            )


def read_at_most(response: BaseHTTPResponse, limit: int) -> bytes | None:
    """The body of a response requested with ``preload_content=False``, or None if it is larger than ``limit``
    bytes, by its Content-Length (left in ``length_remaining``) or once ``limit`` + 1 bytes are read. The
    connection goes back to the pool, closed if the body was not read to its end."""
    whole = False
    try:
        if (response.length_remaining or 0) > limit:
            return None
        data = response.read(limit + 1)
        whole = len(data) <= limit
        return data if whole else None
    finally:
        if not whole:
            response.close()
        response.release_conn()


def _reason(error: Exception) -> str:
    reason = getattr(error, "reason", None) or error
    return str(reason).split(": ", 1)[-1]
