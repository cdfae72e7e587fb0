"""The HTTP caller against services on loopback: how large an answer it reads, the redirects it does not follow,
and the addresses it does not call."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_network
from typing import Any

import pytest

from machinery.addresses import AddressGuard
from machinery.engine.calls import Call, CallFailure, ErrorKind
from machinery.engine.model import HttpEndpoint, Service
from machinery.engine.units import NOTIFY_UNIT
from machinery.services.http import HttpCaller
from tests.support import ScriptedService


def call_to(address: str) -> Call:
    return Call("step", Service("svc", HttpEndpoint(address), timeout=5.0), {"message": "hi"}, 1, "token", "key")


class Raw(ThreadingHTTPServer):
    """A loopback server answering every POST with ``answer(handler)``, for answers ScriptedService cannot give."""

    daemon_threads = True

    def __init__(self, answer: Any) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/event"


@pytest.fixture
def raw() -> Iterator[list[Raw]]:
    servers: list[Raw] = []
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def failure(outcome: tuple[Any, CallFailure | None]) -> CallFailure:
    answer, error = outcome
    assert error is not None, answer
    return error


def test_an_answer_over_the_limit_by_its_content_length_fails_for_good_and_names_both() -> None:
    service = ScriptedService([(200, {"message": "x" * 2000})]).start()
    try:
        error = failure(HttpCaller(max_response_bytes=1000).call(call_to(service.url), "e1"))
    finally:
        service.stop()
    assert (error.kind, error.transient) == (ErrorKind.SIZE, False)
    assert "over the limit of 1000 bytes (MACHINERY_MAX_RESPONSE_BYTES): 2015 bytes by its Content-Length" in (
        error.message
    )


def test_an_answer_over_the_limit_without_a_length_is_read_no_further_and_the_pool_still_works(
    raw: list[Raw],
) -> None:
    sent: list[int] = []

    def endless(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        chunk = b"x" * 4096
        try:
            for _ in range(10_000):  # 40 MB, if anyone read it all
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent.append(len(chunk))
        except OSError:
            pass  # the caller closed the connection: what is asked

    raw.append(Raw(endless))
    caller = HttpCaller(max_response_bytes=1000)
    error = failure(caller.call(call_to(raw[0].url), "e1"))
    assert (error.kind, error.transient) == (ErrorKind.SIZE, False)
    assert error.message.endswith("over the limit of 1000 bytes (MACHINERY_MAX_RESPONSE_BYTES): more than 1000 bytes")

    service = ScriptedService([(200, {"message": "small"})]).start()
    try:
        assert caller.call(call_to(service.url), "e2") == ({"message": "small"}, None)
    finally:
        service.stop()
    assert sum(sent) < 10_000 * 4096


def test_an_answer_up_to_the_limit_is_read_whole() -> None:
    service = ScriptedService([(200, {"message": "x" * 985})]).start()  # 1000 bytes of JSON
    try:
        assert HttpCaller(max_response_bytes=1000).call(call_to(service.url), "e1") == ({"message": "x" * 985}, None)
    finally:
        service.stop()


def test_an_answer_nested_too_deep_to_read_fails_for_good_and_says_so(raw: list[Raw]) -> None:
    body = b"[" * 100_000 + b"]" * 100_000

    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    raw.append(Raw(answer))
    error = failure(HttpCaller().call(call_to(raw[0].url), "e1"))
    assert (error.kind, error.transient) == (ErrorKind.JSON, False)
    assert "nested too deep" in error.message


def test_a_redirect_is_not_followed_and_fails_the_call(raw: list[Raw]) -> None:
    target = ScriptedService([(200, {"message": "secret"})]).start()

    def redirect(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", target.url)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    raw.append(Raw(redirect))
    try:
        error = failure(HttpCaller().call(call_to(raw[0].url), "e1"))
    finally:
        target.stop()
    assert (error.kind, error.transient, error.details) == (ErrorKind.HTTP, False, {"status_code": 302})
    assert target.calls == []


def test_a_name_resolving_to_the_metadata_address_fails_for_good_without_a_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_connection(*args: Any, **kwargs: Any) -> None:
        pytest.fail("a connection was attempted")

    monkeypatch.setattr("urllib3.util.connection.create_connection", no_connection)
    guard = AddressGuard(resolver={"metadata.example": ["169.254.169.254"]}.__getitem__)
    error = failure(HttpCaller(guard=guard).call(call_to("http://metadata.example/latest/meta-data"), "e1"))
    assert (error.kind, error.transient) == (ErrorKind.ADDRESS, False)
    assert error.message == (
        "POST http://metadata.example/latest/meta-data was not called: metadata.example resolves to a refused"
        " address: 169.254.169.254 is link-local (where clouds serve instance metadata); not connected to"
    )


def test_a_notification_to_a_denied_network_fails_for_good() -> None:
    guard = AddressGuard((ip_network("10.0.0.0/8"),), resolver=lambda host: ["10.1.2.3"])
    notify = Service(NOTIFY_UNIT, HttpEndpoint("http://hooks.internal/ended"), timeout=1.0)
    error = failure(HttpCaller(guard=guard).call(Call(NOTIFY_UNIT, notify, {}, 1, "token", "key"), "e1"))
    assert (error.kind, error.transient) == (ErrorKind.ADDRESS, False)
    assert "10.1.2.3 is in 10.0.0.0/8, denied by MACHINERY_DENY_NETWORKS" in error.message


def test_a_name_is_resolved_once_and_the_address_checked_is_the_one_connected_to(raw: list[Raw]) -> None:
    hosts: list[str | None] = []

    def answer(handler: BaseHTTPRequestHandler) -> None:
        hosts.append(handler.headers["Host"])
        handler.send_response(200)
        handler.send_header("Content-Length", "2")
        handler.end_headers()
        handler.wfile.write(b"{}")

    raw.append(Raw(answer))
    port = raw[0].server_address[1]
    resolved: list[str] = []

    def resolver(host: str) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"]

    caller = HttpCaller(guard=AddressGuard(resolver=resolver))
    assert caller.call(call_to(f"http://svc.example:{port}/event"), "e1") == ({}, None)
    assert (resolved, hosts) == (["svc.example"], [f"svc.example:{port}"])


def test_a_name_that_does_not_resolve_is_a_transient_connection_failure() -> None:
    def unknown(host: str) -> list[str]:
        raise socket.gaierror(-2, "Name or service not known")

    error = failure(HttpCaller(guard=AddressGuard(resolver=unknown)).call(call_to("http://nowhere.example/"), "e1"))
    assert (error.kind, error.transient) == (ErrorKind.CONNECTION, True)
    assert "Name or service not known" in error.message
