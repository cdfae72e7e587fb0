"""A service's health from one probe to the next: up, unreachable, then down; one success brings it back up."""

from __future__ import annotations

from machinery.engine.health import DOWN, UNREACHABLE, UP, Health, after_probe


def probes(*outcomes: str | None, down_after: int = 3) -> list[Health]:
    """The health after each probe, the n-th at time n; an outcome is an error, or None for a success."""
    healths: list[Health] = []
    for now, error in enumerate(outcomes, start=1):
        healths.append(after_probe(healths[-1] if healths else None, error, float(now), down_after))
    return healths


def test_a_service_whose_first_probe_succeeds_is_up_since_then():
    assert probes(None) == [Health(UP, since=1.0, checked_at=1.0)]


def test_a_failed_probe_makes_a_service_unreachable_and_enough_in_a_row_make_it_down():
    healths = probes(None, "refused", "refused", "refused", "timed out")

    assert [h.status for h in healths] == [UP, UNREACHABLE, UNREACHABLE, DOWN, DOWN]
    assert [h.failures for h in healths] == [0, 1, 2, 3, 4]
    assert healths[-1].error == "timed out"
    assert [h.since for h in healths] == [1.0, 2.0, 2.0, 4.0, 4.0]


def test_one_successful_probe_brings_a_down_service_back_up_and_forgets_its_failures():
    healths = probes("refused", "refused", None, None, down_after=2)

    assert [h.status for h in healths] == [UNREACHABLE, DOWN, UP, UP]
    assert healths[-1] == Health(UP, since=3.0, checked_at=4.0, failures=0, error=None)


def test_with_down_after_1_the_first_failure_makes_a_service_down():
    assert probes("refused", down_after=1)[0].status == DOWN
