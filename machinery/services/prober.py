"""Probing the services that have a health check, and recording what they answer.

Any process that runs a sweeper probes every ``interval`` seconds, but leaves alone a
service another process probed less than half an interval ago: with several workers,
a service is probed about once an interval, and its failures are counted once. A change
of status is logged, and a service coming back up has the calls held for it sent at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import urllib3
from urllib3.exceptions import HTTPError
from urllib3.util import parse_url

from machinery.addresses import DEFAULT_GUARD, AddressGuard, RefusedAddress
from machinery.engine.errors import InvalidConfig
from machinery.engine.health import DOWN, UP, Health, after_probe
from machinery.engine.model import HttpEndpoint, Service
from machinery.engine.ports import Dispatcher, Store, every
from machinery.services.http import GuardedPool, read_at_most
from machinery.services.secrets import Secrets

log = logging.getLogger(__name__)


def _just_back_up(previous: Health, health: Health) -> bool:
    """Up after being down, at this probe or the one before.

    The calls held while it was down are sent at both: a worker that read its health just
    before the first, from a cache a few seconds old, may have held one more call since.
    """
    return health.status == UP and (previous.status == DOWN or previous.since == previous.checked_at)


class HealthProber:
    """Probes each service that has a health check and records its health in the store, where workers read
    whether to hold its calls; a sweeper runs it."""

    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        down_after: int,
        interval: float,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.time,
        secrets: Secrets | None = None,
        guard: AddressGuard = DEFAULT_GUARD,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.down_after = down_after
        self.interval = interval
        self.timeout = timeout
        self.clock = clock
        self.pool = GuardedPool(guard)
        self.secrets = secrets or Secrets()

    def probe(self) -> int:
        """Probe every service that has a health check; how many changed status."""
        changed = 0
        before = self.store.health()
        for service in every(self.store.list_services):
            if service.healthcheck is None:
                continue
            previous = before.get(service.name)
            now = self.clock()
            if previous is not None and now - previous.checked_at < self.interval / 2:
                continue
            health = after_probe(previous, self._check(service, service.healthcheck), now, self.down_after)
            self.store.save_health(service.name, health)
            if previous is None or previous.status != health.status:
                changed += 1
                self._log(service.name, health)
            if previous is not None and _just_back_up(previous, health):
                self._release(service.name)
        return changed

    def _check(self, service: Service, url: str) -> str | None:
        """Why ``service`` is not healthy, asked at ``url``, or None if it is.

        The service's headers (its credentials among them) go only to its own origin: a health check on another
        host is asked without them.
        """
        try:
            endpoint = service.endpoint
            same_origin = isinstance(endpoint, HttpEndpoint) and _origin(url) == _origin(endpoint.address)
            headers = (
                self.secrets.resolve(endpoint.headers) if isinstance(endpoint, HttpEndpoint) and same_origin else {}
            )
            response = self.pool.request("GET", url, headers=headers, timeout=urllib3.Timeout(total=self.timeout))
            read_at_most(response, 0)  # the body is not read: the connection is closed if there is one
        except InvalidConfig as e:
            return f"GET {url} not sent: {e.message}"
        except RefusedAddress as e:
            return f"GET {url} was not sent: {e}"
        except (HTTPError, OSError) as e:  # OSError: the name does not resolve
            return f"GET {url} failed: {e}"
        return None if 200 <= response.status < 300 else f"GET {url} answered {response.status}"

    def _log(self, name: str, health: Health) -> None:
        if health.status == UP:
            log.info("service %s is up", name)
        else:
            log.warning("service %s is %s: %s", name, health.status, health.error)

    def _release(self, name: str) -> None:
        for event_id, unit in self.store.take_waiters(name):
            self.dispatcher.dispatch(event_id, unit)


def _origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port: where a URL's requests go, as browsers scope credentials."""
    parsed = parse_url(url)
    return (parsed.scheme or "", (parsed.host or "").lower(), parsed.port)
