"""Running events: accepting them, and advancing them one step at a time.

The store holds the truth; a dispatched message only says "look at step X of
event Y". Every change is read, decided by :mod:`machinery.engine.decider`,
and written back conditionally (:mod:`~machinery.runtime.writes`); on a
conflict it is read and decided again, so a duplicated, late or lost message
changes nothing that matters and the sweeper can always resume.

- :mod:`~machinery.runtime.plans`: compiled workflow versions, and the services as a worker sees them;
- :mod:`~machinery.runtime.events`: what users do with events;
- :mod:`~machinery.runtime.runner`: what workers do with them;
- :mod:`~machinery.runtime.writes`: writing an event back, and what follows.
"""

from machinery.runtime.events import BulkRetry, Events
from machinery.runtime.plans import Clock, Plans, ServiceCache
from machinery.runtime.runner import Runner
from machinery.runtime.writes import LANE_RUN, MAX_COUNTDOWN

__all__ = ["LANE_RUN", "MAX_COUNTDOWN", "BulkRetry", "Clock", "Events", "Plans", "Runner", "ServiceCache"]
