"""Retry policy of a service call: how often, and how long to wait in between."""

from __future__ import annotations

from dataclasses import dataclass

from machinery.engine.errors import InvalidDefinition


@dataclass(frozen=True)
class RetryPolicy:
    """When a call fails with a transient error (timeout, connection error, 5xx)."""

    attempts: int = 3
    """Calls made at most, the first one included; 1 means no retry."""

    backoff: float = 0.5
    """Seconds to wait before the second call."""

    multiplier: float = 2.0
    """Each further wait is the one before times this."""

    max_delay: float = 30.0
    """No wait is longer than this, in seconds."""

    jitter: bool = True
    """Spread each wait uniformly over [delay/2, delay] so that retries do not arrive in step."""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise InvalidDefinition("attempts must be at least 1")
        if self.backoff < 0 or self.max_delay < 0:
            raise InvalidDefinition("delays cannot be negative")
        if self.multiplier < 1:
            raise InvalidDefinition("multiplier must be at least 1")

    def delay(self, attempt: int, random: float) -> float:
        """Seconds to wait after failed call number ``attempt`` (1-based).

        ``random`` is a number in [0, 1) from the caller, so that this stays a pure function.
        """
        try:
            delay = min(self.max_delay, self.backoff * self.multiplier ** (attempt - 1))
        except OverflowError:
            delay = self.max_delay
        if self.jitter:
            delay = delay / 2 + delay / 2 * random
        return delay
