"""The pure part of fleets: transitions of a workload's state, and the assigner's decisions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from machinery.engine.errors import InvalidDefinition
from machinery.engine.fleets import (
    FleetSettings,
    Lifecycle,
    Workload,
    WorkloadState,
    assign,
    failed,
    next_ping,
    rebalance,
    spread,
    succeeded,
)
from machinery.engine.kinds.fleet import lanes

SETTINGS = FleetSettings(ping_interval=10.0, ping_jitter=0.2, dead_after=3, dead_cooldown=60.0)


def workload(state: WorkloadState = WorkloadState.INITIALIZING, failed_pings: int = 0) -> Workload:
    return Workload("routers", "r1", state=state, host="h1", failed_pings=failed_pings)


def test_a_first_init_that_succeeds_says_initialized_and_the_workload_is_up() -> None:
    after, event = succeeded(workload(), SETTINGS, 100.0, 0.0, init=True)
    assert after.state is WorkloadState.UP and after.since == 100.0
    assert event is not None and event.kind is Lifecycle.INITIALIZED and event.host == "h1"


def test_a_ping_that_succeeds_on_an_up_workload_makes_no_event() -> None:
    after, event = succeeded(workload(WorkloadState.UP), SETTINGS, 100.0, 0.5)
    assert event is None
    assert after.next_ping_at == pytest.approx(100.0 + 10.0 * 1.1)


def test_a_failed_ping_makes_an_up_workload_unreachable_once() -> None:
    first, event = failed(workload(WorkloadState.UP), SETTINGS, 100.0, 0.0, "timed out")
    assert first.state is WorkloadState.UNREACHABLE and first.failed_pings == 1 and first.message == "timed out"
    assert event is not None and event.kind is Lifecycle.UNREACHABLE and event.message == "timed out"
    second, again = failed(first, SETTINGS, 110.0, 0.0, "timed out")
    assert second.state is WorkloadState.UNREACHABLE and second.failed_pings == 2 and again is None


def test_a_workload_is_dead_after_the_threshold_and_tried_again_after_the_cooldown() -> None:
    current = workload(WorkloadState.UP)
    events = []
    for now in (100.0, 110.0, 120.0):
        current, event = failed(current, SETTINGS, now, 0.0, "refused")
        events.append(event.kind if event else None)
    assert events == [Lifecycle.UNREACHABLE, None, Lifecycle.DEAD]
    assert current.state is WorkloadState.DEAD and current.next_ping_at == 180.0
    still, event = failed(current, SETTINGS, 180.0, 0.0, "refused")
    assert still.state is WorkloadState.DEAD and event is None and still.next_ping_at == 240.0


def test_a_dead_workload_that_answers_again_is_up_and_says_so() -> None:
    after, event = succeeded(workload(WorkloadState.DEAD, failed_pings=3), SETTINGS, 200.0, 0.0, init=True)
    assert after.state is WorkloadState.UP and after.failed_pings == 0
    assert event is not None and event.kind is Lifecycle.UP


def test_an_init_that_fails_says_so_once_and_the_workload_stays_initializing() -> None:
    first, event = failed(workload(), SETTINGS, 100.0, 0.0, "no route", init=True)
    assert first.state is WorkloadState.INITIALIZING and event is not None and event.kind is Lifecycle.INIT_FAILED
    second, again = failed(first, SETTINGS, 110.0, 0.0, "no route", init=True)
    assert second.state is WorkloadState.INITIALIZING and again is None
    third, dead = failed(second, SETTINGS, 120.0, 0.0, "no route", init=True)
    assert third.state is WorkloadState.DEAD and dead is not None and dead.kind is Lifecycle.DEAD


def test_pings_are_jittered_within_the_fraction_of_the_interval() -> None:
    assert next_ping(SETTINGS, 0.0, 0.0) == 10.0
    assert next_ping(SETTINGS, 0.0, 0.999) < 12.0


def test_settings_out_of_range_are_refused() -> None:
    with pytest.raises(InvalidDefinition):
        FleetSettings(ping_interval=0)
    with pytest.raises(InvalidDefinition):
        FleetSettings(ping_jitter=2)
    with pytest.raises(InvalidDefinition):
        FleetSettings(dead_after=0)


def test_new_workloads_go_to_the_least_loaded_hosts() -> None:
    given_ = assign({"a": 5, "b": 0, "c": 3}, [f"w{i}" for i in range(6)])
    assert {host: len(names) for host, names in given_.items()} == {"b": 5, "c": 1}
    assert given_["b"][0] == "w0"


def test_with_no_host_nothing_is_assigned() -> None:
    assert assign({}, ["w1"]) == {}


def test_a_rebalance_moves_no_more_than_needed() -> None:
    moves = rebalance({"a": 10, "b": 0}, max_spread=5, max_moves=100)
    assert [(m.source, m.target, m.count) for m in moves] == [("a", "b", 3)]


def test_a_rebalance_within_the_spread_moves_nothing() -> None:
    assert rebalance({"a": 10, "b": 5}, max_spread=5, max_moves=100) == []


def test_a_rebalance_moves_at_most_its_bound_per_round() -> None:
    moves = rebalance({"a": 1000, "b": 0, "c": 0}, max_spread=5, max_moves=50)
    assert sum(m.count for m in moves) == 50


def apply(loads: dict[str, int], moves: list) -> dict[str, int]:  # type: ignore[type-arg]
    after = dict(loads)
    for move in moves:
        after[move.source] -= move.count
        after[move.target] += move.count
    return after


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 300), min_size=1),
    st.integers(1, 10),
    st.integers(1, 200),
)
def test_a_rebalance_round_never_exceeds_its_bound_and_ends_within_the_spread_when_it_can(
    loads: dict[str, int], max_spread: int, max_moves: int
) -> None:
    moves = rebalance(loads, max_spread, max_moves)
    moved = sum(m.count for m in moves)
    assert moved <= max_moves
    after = apply(loads, moves)
    assert sum(after.values()) == sum(loads.values()) and min(after.values()) >= 0
    assert spread(after) <= max(spread(loads), max_spread)
    if moved < max_moves:
        assert spread(after) <= max_spread
    # Rounds repeated reach the spread, however far the loads start from it.
    for _ in range(sum(loads.values()) // max_moves + 2):
        after = apply(after, rebalance(after, max_spread, max_moves))
    assert spread(after) <= max_spread


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 50), min_size=1), st.integers(0, 500))
def test_assigning_keeps_every_workload_once_and_levels_the_loads(loads: dict[str, int], count: int) -> None:
    names = [f"w{i}" for i in range(count)]
    given_ = assign(loads, names)
    assert sorted(n for chosen in given_.values() for n in chosen) == sorted(names)
    after = {host: load + len(given_.get(host, [])) for host, load in loads.items()}
    assert spread(after) <= max(spread(loads), 1)


def _chains(laid: list[tuple[Workload, int | None, bool]]) -> list[list[Workload]]:
    """The lanes of ``lanes``' answer, each as the workloads it runs in turn."""
    chains = []
    for index, (_, _, first) in enumerate(laid):
        if first:
            chain, at = [], index
            while at is not None:
                chain.append(laid[at][0])
                at = laid[at][1]
            chains.append(chain)
    return chains


def test_each_hosts_workloads_run_in_lanes_of_their_own_as_many_as_its_share() -> None:
    # Spread by name over three hosts in turn, as the assigner does: a lane by index would hop at every item.
    up = [Workload("f", f"w{i:02d}", state=WorkloadState.UP, host=f"h{i % 3}") for i in range(12)]

    chains = _chains(lanes(up, 6))

    assert len(chains) == 6
    assert all(len({w.host for w in chain}) == 1 for chain in chains)
    assert sorted(len([c for c in chains if c[0].host == host]) for host in ("h0", "h1", "h2")) == [2, 2, 2]


@given(
    hosts=st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=12),
    concurrency=st.integers(min_value=1, max_value=20),
)
def test_lanes_run_every_workload_once_and_never_more_at_once_than_the_concurrency(
    hosts: list[int], concurrency: int
) -> None:
    up = [
        Workload("f", f"h{h}-w{i}", state=WorkloadState.UP, host=f"h{h}")
        for h, count in enumerate(hosts)
        for i in range(count)
    ]

    chains = _chains(lanes(up, concurrency))

    assert sorted(w.name for chain in chains for w in chain) == sorted(w.name for w in up)
    assert min(concurrency, len(hosts)) <= len(chains) <= concurrency
    # A lane changes host only to end with the workloads of hosts that have no lane of their own.
    assert all(sum(a.host != b.host for a, b in zip(c, c[1:], strict=False)) <= len(hosts) for c in chains)
