"""The health prober against services on loopback: what it records, and the held calls it sends once a service
is back up."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from machinery.addresses import AddressGuard
from machinery.bootstrap import Config, Machinery
from machinery.engine.health import DOWN, UNREACHABLE, UP
from machinery.engine.model import HttpEndpoint, Service
from machinery.services.prober import HealthProber
from tests.support import ScriptedService, free_port


class Sent:
    """A dispatcher that keeps what it is asked to send."""

    def __init__(self) -> None:
        self.units: list[tuple[str, str]] = []

    def dispatch(self, event_id: str, step_id: str, delay: float = 0.0) -> None:
        self.units.append((event_id, step_id))


@pytest.fixture
def machinery(tmp_path: Path) -> Iterator[Machinery]:
    machinery = Machinery(Config(data_dir=tmp_path))
    yield machinery
    machinery.store.close()


def register(machinery: Machinery, port: int, path: str = "/healthcheck") -> None:
    address = f"http://127.0.0.1:{port}"
    machinery.registry.add_service(
        Service(name="upper", endpoint=HttpEndpoint(f"{address}/event"), healthcheck=f"{address}{path}")
    )
    machinery.registry.add_service(Service(name="unprobed", endpoint=HttpEndpoint(f"{address}/event")))


def prober(machinery: Machinery, sent: Sent) -> HealthProber:
    ticks = itertools.count(1)
    return HealthProber(
        machinery.store, sent, down_after=2, interval=1.0, timeout=1.0, clock=lambda: float(next(ticks))
    )


def test_a_service_answering_its_health_check_is_up_and_one_without_a_check_is_not_probed(
    machinery: Machinery,
) -> None:
    service = ScriptedService([(200, {})]).start()
    register(machinery, service.port)

    assert prober(machinery, Sent()).probe() == 1

    assert {name: h.status for name, h in machinery.store.health().items()} == {"upper": UP}
    service.stop()


def test_a_service_that_stops_answering_is_unreachable_then_down_and_says_why(machinery: Machinery) -> None:
    register(machinery, free_port())
    probe = prober(machinery, Sent())

    probe.probe()
    assert machinery.store.health()["upper"].status == UNREACHABLE
    probe.probe()
    health = machinery.store.health()["upper"]
    assert (health.status, health.failures) == (DOWN, 2)
    assert health.error is not None and health.error.startswith("GET http://127.0.0.1:")


def test_a_service_probed_less_than_half_an_interval_ago_by_another_process_is_left_alone(
    machinery: Machinery,
) -> None:
    register(machinery, free_port())
    other = HealthProber(machinery.store, Sent(), down_after=2, interval=10.0, clock=lambda: 100.0)
    other.probe()

    assert HealthProber(machinery.store, Sent(), down_after=2, interval=10.0, clock=lambda: 104.9).probe() == 0
    assert machinery.store.health()["upper"].failures == 1
    HealthProber(machinery.store, Sent(), down_after=2, interval=10.0, clock=lambda: 105.0).probe()
    assert machinery.store.health()["upper"].failures == 2


def test_a_health_check_answering_outside_2xx_fails(machinery: Machinery) -> None:
    service = ScriptedService([(200, {})]).start()
    register(machinery, service.port, path="/nothing")

    prober(machinery, Sent()).probe()

    assert machinery.store.health()["upper"].error == f"GET http://127.0.0.1:{service.port}/nothing answered 404"
    service.stop()


def test_the_calls_held_while_a_service_was_down_are_sent_when_it_is_up_and_at_the_next_probe(
    machinery: Machinery,
) -> None:
    port = free_port()
    register(machinery, port)
    sent = Sent()
    probe = prober(machinery, sent)
    probe.probe()
    probe.probe()
    machinery.store.hold("upper", ("ev-1", "upper"), since=3.0)
    service = ScriptedService([(200, {})], port=port).start()

    probe.probe()
    assert sent.units == [("ev-1", "upper")]
    machinery.store.hold("upper", ("ev-2", "upper"), since=4.0)
    probe.probe()
    assert sent.units == [("ev-1", "upper"), ("ev-2", "upper")]
    machinery.store.hold("upper", ("ev-3", "upper"), since=5.0)
    probe.probe()
    assert sent.units == [("ev-1", "upper"), ("ev-2", "upper")]
    service.stop()


def test_a_health_check_whose_name_resolves_to_a_refused_address_is_not_sent_and_counts_as_failed(
    machinery: Machinery,
) -> None:
    machinery.registry.add_service(
        Service(name="upper", endpoint=HttpEndpoint("http://127.0.0.1:1/event"), healthcheck="http://meta.test/")
    )
    guard = AddressGuard(resolver={"meta.test": ["169.254.169.254"]}.__getitem__)
    HealthProber(machinery.store, Sent(), down_after=2, interval=1.0, timeout=1.0, guard=guard).probe()

    health = machinery.store.health()["upper"]
    assert health.status == UNREACHABLE
    assert health.error == (
        "GET http://meta.test/ was not sent: meta.test resolves to a refused address: 169.254.169.254 is link-local"
        " (where clouds serve instance metadata); not connected to"
    )
