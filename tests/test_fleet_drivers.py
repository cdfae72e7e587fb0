"""The drivers of fleets: found by name, the http driver against a device on loopback, the simulated one."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from machinery.addresses import AddressGuard, parse_networks
from machinery.engine.errors import InvalidDefinition
from machinery.engine.fleets import FleetSettings, Workload
from machinery.fleets.drivers import (
    Driver,
    DriverContext,
    DriverError,
    HttpDriver,
    SimulatedDriver,
    driver_names,
    load_driver,
)
from tests.devices import Device

CONTEXT = DriverContext(FleetSettings(ping_timeout=1.0, init_timeout=1.0))


@pytest.fixture
def device() -> Iterator[Device]:
    device = Device()
    yield device
    device.stop()


def workload(**config: object) -> Workload:
    return Workload("devices", "d1", config=config)


def test_the_built_in_drivers_are_found_by_name() -> None:
    assert {"http", "simulated"} <= set(driver_names())
    assert load_driver("http") is HttpDriver
    assert load_driver("simulated") is SimulatedDriver


def test_an_unknown_driver_is_refused_with_the_names_of_those_there_are() -> None:
    with pytest.raises(InvalidDefinition, match="no driver 'ssh'.*simulated"):
        load_driver("ssh")


def test_the_http_driver_pings_and_runs_tasks_on_a_device(device: Device) -> None:
    driver = HttpDriver(CONTEXT)
    target = workload(url=device.url)
    driver.init(target)
    driver.ping(target)
    assert device.pings == 2
    assert driver.run(target, "reboot", {"delay": 3}) == {"task": "reboot", "delay": 3}


def test_the_http_driver_fails_a_ping_the_device_refuses(device: Device) -> None:
    device.healthy = False
    with pytest.raises(DriverError, match="answered 503"):
        HttpDriver(CONTEXT).ping(workload(url=device.url))


def test_the_http_driver_fails_a_ping_nobody_answers() -> None:
    with pytest.raises(DriverError, match="failed"):
        HttpDriver(CONTEXT).ping(workload(url="http://127.0.0.1:9/"))


def test_the_http_driver_checks_the_url_with_the_address_guard() -> None:
    driver = HttpDriver(DriverContext(guard=AddressGuard(parse_networks("10.0.0.0/8"))))
    assert driver.check_config({"url": "http://10.1.2.3/"})
    assert driver.check_config({"url": "ftp://device/"}) == ["config.url should be an http:// or https:// URL"]
    assert driver.check_config({"url": "http://device.example/"}) == []


def test_the_simulated_driver_fails_the_same_calls_given_the_same_seed() -> None:
    def outcomes() -> list[bool]:
        driver, target = SimulatedDriver(CONTEXT), workload(failure_rate=0.5, seed=7)
        results = []
        for _ in range(40):
            try:
                driver.ping(target)
                results.append(True)
            except DriverError:
                results.append(False)
        return results

    first = outcomes()
    assert first == outcomes() and 5 < first.count(False) < 35


def test_the_simulated_driver_times_out_a_call_slower_than_the_timeout() -> None:
    driver = SimulatedDriver(DriverContext(FleetSettings(ping_timeout=0.05)))
    with pytest.raises(DriverError, match="timed out"):
        driver.ping(workload(latency=1.0))


def test_the_simulated_driver_checks_its_config() -> None:
    assert SimulatedDriver(CONTEXT).check_config({"latency": -1, "failure_rate": 2}) == [
        "config.latency should be a number of seconds, 0 or more",
        "config.failure_rate should be a number from 0 to 1",
    ]


def test_the_readmes_example_driver_keeps_the_protocol_and_pings_a_port(device: Device) -> None:
    (example,) = re.findall(r"```py\n(.*?)```", (Path(__file__).parents[1] / "README.md").read_text(), re.S)
    namespace: dict[str, Any] = {}
    exec(compile(example, "README.md", "exec"), namespace)
    driver: Driver = namespace["TcpDriver"](CONTEXT)
    host, port = device.url.removeprefix("http://").split(":")
    target = workload(host=host, port=int(port))
    assert driver.check_config(target.config) == [] and driver.check_config({"host": 1})
    driver.init(target)
    driver.ping(target)
    with pytest.raises(DriverError, match="cannot connect"):
        driver.ping(workload(host="127.0.0.1", port=9))
