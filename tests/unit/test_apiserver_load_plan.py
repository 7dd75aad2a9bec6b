"""bench/apiserver_load.py's pure parts: Kyverno's k6 scenarios as vegeta steps, percentiles,
thresholds and the breakpoint rate (the bench itself needs the cluster and is not a test)."""

from __future__ import annotations

import json

import pytest
from bench.apiserver_load import (
    SCENARIOS,
    Result,
    Step,
    Summary,
    breakpoint_rate,
    held,
    load_pod,
    meets,
    mutated,
    percentile,
    plan,
)


def test_smoke_is_two_closed_loop_workers_for_twenty_seconds() -> None:
    assert plan(SCENARIOS["smoke"]) == [Step(20, 2)]
    assert Step(20, 2).vegeta_args() == ["-rate=0", "-workers=2", "-max-workers=2"]


def test_average_ramps_up_holds_and_ramps_down_in_ten_second_pieces() -> None:
    # 1 -> 5 VUs over 30 s (k6 starts ramping-vus at 1), 3 min at 5, 5 -> 0 over 30 s.
    assert plan(SCENARIOS["average"]) == [
        Step(10, 2),
        Step(10, 3),
        Step(10, 4),
        Step(180, 5),
        Step(10, 4),
        Step(10, 3),
        Step(10, 1),
    ]


def test_every_ramping_scenario_keeps_its_duration_and_peak() -> None:
    for name, peak, seconds in (("stress", 10, 270), ("soak", 5, 1860), ("spike", 92, 90)):
        steps = plan(SCENARIOS[name])
        assert sum(s.seconds for s in steps) == pytest.approx(seconds)
        assert max(s.workers for s in steps) == peak
        assert all(s.rate == 0 for s in steps)


def test_the_breakpoint_is_an_open_loop_ramp_to_300_per_second() -> None:
    steps = plan(SCENARIOS["breakpoint"])
    assert len(steps) == 20
    assert [s.rate for s in steps[:2]] == [7.5, 22.5]
    assert steps[-1].rate == 292.5
    assert {(s.seconds, s.workers, s.max_workers) for s in steps} == {(30, 20, 200)}
    assert steps[0].vegeta_args() == ["-rate=7.5/1s", "-workers=20", "-max-workers=200"]


def test_scale_shortens_every_step_alike() -> None:
    full, tenth = plan(SCENARIOS["stress"]), plan(SCENARIOS["stress"], 0.1)
    assert [s.workers for s in tenth] == [s.workers for s in full]
    assert [s.seconds for s in tenth] == pytest.approx([s.seconds / 10 for s in full])


def test_a_cap_limits_closed_and_open_loops() -> None:
    assert Step(5, 3).vegeta_args(cap=5) == ["-rate=5/1s", "-workers=3", "-max-workers=3"]
    assert Step(5, 20, 100, 200).vegeta_args(cap=5)[0] == "-rate=5/1s"


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 95) == pytest.approx(95.05)
    assert percentile([3.0], 99) == 3.0


def results(latencies: list[float], codes: list[int]) -> list[Result]:
    return [
        Result(float(i), lat, code)
        for i, (lat, code) in enumerate(zip(latencies, codes, strict=True))
    ]


def test_thresholds_are_kyvernos_strict_inequalities() -> None:
    smoke = SCENARIOS["smoke"]
    ok = Summary.of(results([0.1] * 100, [201] * 100))
    assert meets(ok, smoke) == (True, True)
    one_bad = Summary.of(results([0.1] * 100, [201] * 99 + [500]))
    assert meets(one_bad, smoke)[0] is False  # 0.99 is not > 0.99
    slow = Summary.of(results([0.1] * 90 + [0.7] * 10, [201] * 100))
    assert meets(slow, smoke) == (True, False)
    assert meets(ok, SCENARIOS["breakpoint"]) == (True, None)


def test_the_breakpoint_is_the_last_rate_held_before_the_first_miss() -> None:
    def step(rate: float, sent: int, code: int = 201, latency: float = 0.1) -> tuple[Step, Summary]:
        return Step(10, 20, rate, 200), Summary.of(results([latency] * sent, [code] * sent))

    assert breakpoint_rate([step(10, 100), step(20, 200), step(30, 200)], 1600) == 20
    assert breakpoint_rate([step(10, 100), step(20, 200, code=429)], 1600) == 10
    assert breakpoint_rate([step(10, 100), step(20, 200, latency=2.0)], 1600) == 10
    # Later steps do not count once one was missed.
    assert breakpoint_rate([step(10, 100, code=500), step(20, 200)], 1600) == 0
    assert not held(*step(10, 89))  # under 90% of the rate was sent


def test_the_mutation_check_wants_archwardens_affinity_and_annotation() -> None:
    pod = load_pod("registry.local/web:1")
    assert not mutated(json.dumps(pod).encode())
    pod["metadata"]["annotations"] = {"archwarden.io/platforms": "linux/amd64,linux/arm64"}
    expression = {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]}
    pod["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [expression]}]
            }
        }
    }
    assert mutated(json.dumps(pod).encode())
    assert not mutated(b"not json")
