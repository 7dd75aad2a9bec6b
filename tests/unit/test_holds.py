"""Holds after a 429, on a fake clock: how long, for which host, and what a refusal says."""

from __future__ import annotations

import re

import pytest

from archwarden import registry
from archwarden.registry import _holds


class Clock:
    def __init__(self) -> None:
        self.now = 500.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def holds(clock: Clock) -> registry.Holds:
    # Wall time 12:00:00Z when the monotonic clock reads 500.
    return registry.Holds(clock=clock, wall=lambda: clock.now - 500 + 43200, sleep=clock.sleep)


async def test_a_hostile_retry_after_holds_for_an_hour_at_most() -> None:
    clock = Clock()
    held = holds(clock)
    held.hold("evil.example", 1e9)
    with pytest.raises(registry.RegistryHeld) as caught:
        await held.admit("evil.example")
    assert str(caught.value) == (
        "registry evil.example: asked to wait 1000000000s (Retry-After); "
        "not asked again until 13:00:00Z"
    )
    assert caught.value.retry_after == _holds.MAX_HOLD_SECONDS
    clock.now += _holds.MAX_HOLD_SECONDS
    await held.admit("evil.example")  # asked again


async def test_without_retry_after_the_default_hold() -> None:
    clock = Clock()
    held = holds(clock)
    held.hold("r.example", None)
    with pytest.raises(registry.RegistryHeld, match="answered 429 without Retry-After; not asked"):
        await held.admit("r.example")
    clock.now += _holds.DEFAULT_HOLD_SECONDS
    await held.admit("r.example")


async def test_a_retry_after_too_long_to_read_is_still_one_line_and_capped() -> None:
    clock = Clock()
    held = holds(clock)
    held.hold("r.example", float("inf"))  # what _wire.retry_after makes of 16 digits or more
    with pytest.raises(registry.RegistryHeld) as caught:
        await held.admit("r.example")
    assert "asked to wait over 10^15s (Retry-After)" in str(caught.value)
    assert caught.value.retry_after == _holds.MAX_HOLD_SECONDS


async def test_a_hold_is_its_hosts_own() -> None:
    held = holds(Clock())
    held.hold("evil.example", 60)
    for other in ("registry.example", "evil.example:5000", "sub.evil.example"):
        await held.admit(other)
    assert held.held("evil.example") is not None


async def test_paced_work_waits_out_a_hold_within_its_patience() -> None:
    clock = Clock()
    held = holds(clock)
    held.hold("r.example", 5)
    with pytest.raises(registry.RegistryHeld):
        await held.admit("r.example", patience=4.9)
    await held.admit("r.example", patience=10)
    assert clock.slept == [5]


async def test_a_shorter_retry_after_never_shortens_a_hold() -> None:
    clock = Clock()
    held = holds(clock)
    held.hold("r.example", 60)
    held.hold("r.example", 1)
    clock.now += 2
    with pytest.raises(registry.RegistryHeld, match="asked to wait 60s"):
        await held.admit("r.example")


async def test_only_the_lookup_that_met_a_hold_may_end_it() -> None:
    clock = Clock()
    held = holds(clock)
    held.hold("r.example", 2)
    first = held.held("r.example")
    assert first is not None
    held.hold("r.example", 1)  # another 429 meanwhile: the hold is no longer the first one's
    held.release("r.example", first)
    assert held.held("r.example") is not None
    current = held.held("r.example")
    assert current is not None
    held.release("r.example", current)
    await held.admit("r.example")


def test_refusals_name_the_host_asked_when_it_is_not_the_registry() -> None:
    refused = registry.RegistryHeld(
        "registry-1.docker.io", "registry-1.docker.io", 60, 43200.0, 60.0
    ).about("docker.io", "library/nginx:1")
    assert re.fullmatch(
        r"registry docker\.io: registry-1\.docker\.io asked to wait 60s \(Retry-After\); "
        r"not asked again until 12:00:00Z: library/nginx:1",
        str(refused),
    )
