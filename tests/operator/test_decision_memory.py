"""What a review keeps is bounded by configuration, not by what a tenant writes (issue 18,
items 1 and 3): the decision cache holds a digest of each template and is bounded in bytes, and
a template past ``limits.templateBytes`` is judged by failure policy without being kept."""

from __future__ import annotations

import dataclasses
import gc
import tracemalloc
from typing import Any

from archwarden import admission, policy, settings
from tests.operator.test_admission_core import HOST, NODES, Registry, deployment, engine

MIB = 1024 * 1024


def inventory() -> policy.Inventory:
    # The decision cache is used with an inventory (its generation is part of the key).
    held = policy.Inventory()
    for node in NODES:
        held.apply(node.name, node)
    return held


def tolerating(count: int, tag: str, image: str = f"{HOST}/team/legacy:1") -> dict[str, Any]:
    """A Deployment whose template tolerates ``count`` distinct made-up taints."""
    obj = deployment(image, name=f"flood-{tag}")
    obj["spec"]["template"]["spec"]["tolerations"] = [
        {"key": f"flood.example/{tag}-{i:06d}", "operator": "Exists", "effect": "NoSchedule"}
        for i in range(count)
    ]
    return obj


def limited(eng: admission.Admission, **limits: int) -> None:
    eng.config = dataclasses.replace(
        eng.config, limits=dataclasses.replace(eng.config.limits, **limits)
    )


def sample(eng: admission.Admission, name: str, labels: dict[str, str] | None = None) -> float:
    return eng.metrics.registry.get_sample_value(name, labels or {}) or 0.0


async def test_dry_runs_of_distinct_large_templates_keep_no_template() -> None:
    """The attack: many distinct templates just under the template bound, each sent once (as
    server-side dry runs are, at no cost to the tenant). Before, every decision kept its whole
    template as the key: 120 templates of 1,500 tolerations held 32 MiB (tracemalloc)."""
    eng = engine(Registry())
    held = inventory()
    eng.nodes = lambda: held
    await eng.review(tolerating(1, "warm"), operation="CREATE")  # the image answer, cached
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(120):
            outcome = await eng.review(tolerating(1500, f"t{n}"), operation="CREATE")
            assert not outcome.allowed  # judged, not skipped: amd64 only on arm64 nodes
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert sample(eng, "archwarden_decision_cache_total", {"result": "miss"}) == 121
    assert kept < 2 * MIB, f"{kept / MIB:.1f} MiB kept after 120 dry runs"


async def test_the_same_template_is_a_hit_however_it_is_named() -> None:
    eng = engine(Registry())
    held = inventory()
    eng.nodes = lambda: held
    first = await eng.review(tolerating(300, "same"), operation="CREATE")
    renamed = tolerating(300, "same")
    renamed["metadata"]["name"] = "another"
    again = await eng.review(renamed, operation="CREATE")
    assert again.message == first.message
    assert sample(eng, "archwarden_decision_cache_total", {"result": "hit"}) == 1
    # One toleration different: another question, another decision.
    changed = tolerating(300, "same")
    changed["spec"]["template"]["spec"]["tolerations"][299]["effect"] = "NoExecute"
    await eng.review(changed, operation="CREATE")
    assert sample(eng, "archwarden_decision_cache_total", {"result": "miss"}) == 2


async def test_the_decision_cache_is_bounded_in_bytes() -> None:
    eng = engine(Registry())
    limited(eng, decision_cache_bytes=16 * 1024)
    held = inventory()
    eng.nodes = lambda: held
    for n in range(200):
        await eng.review(tolerating(1, f"b{n}"), operation="CREATE")
    cache = eng._decisions  # the bound is what this test is about
    assert 0 < cache.currsize <= 16 * 1024
    assert len(cache) < 200
    assert sample(eng, "archwarden_decision_cache_bytes") == cache.currsize
    # The most recent decisions are the ones kept.
    await eng.review(tolerating(1, "b199"), operation="CREATE")
    assert sample(eng, "archwarden_decision_cache_total", {"result": "hit"}) == 1


async def test_a_template_past_the_bound_is_judged_by_failure_policy_and_resolves_nothing() -> None:
    fake = Registry()
    eng = engine(fake, failure_policy="closed")
    huge = tolerating(35_000, "huge")
    size = policy.least_projected_bytes(huge)  # refused before extraction
    limit = settings.LimitsSettings().template_bytes
    outcome = await eng.review(huge, operation="CREATE")
    assert not outcome.allowed and outcome.reason == admission.TEMPLATE_TOO_LARGE
    assert outcome.message == (
        f"the pod template's scheduling fields take at least {size} bytes, more than "
        f"limits.templateBytes ({limit}); images were not checked (failure policy closed)"
    )
    assert "\n" not in outcome.message
    assert [e.reason for e in outcome.events] == ["ImageInspectionFailed"]
    assert fake.requests == []  # nothing resolved for it
    assert len(eng._decisions) == 0
    assert sample(eng, "archwarden_admission_unchecked_total", {"reason": "TemplateTooLarge"}) == 1


async def test_past_the_bound_with_failure_policy_open_admits_with_a_warning() -> None:
    eng = engine(Registry(), failure_policy="open")
    limited(eng, template_bytes=8192)
    outcome = await eng.review(tolerating(200, "open"), operation="CREATE")
    assert outcome.allowed and outcome.label == "warned" and not outcome.decided
    assert outcome.warnings == (outcome.message,)
    assert outcome.message.endswith(
        "more than limits.templateBytes (8192); admitted without a platform check"
    )
    # The mutating webhook's review of the same request is not counted twice.
    await eng.review(tolerating(200, "open"), operation="CREATE", mutate=True)
    assert sample(eng, "archwarden_admission_unchecked_total", {"reason": "TemplateTooLarge"}) == 1


async def test_a_template_under_the_bound_is_judged_as_before() -> None:
    eng = engine(Registry())
    outcome = await eng.review(tolerating(100, "small", f"{HOST}/team/web:1"), operation="CREATE")
    assert outcome.allowed and outcome.decided and outcome.reason != admission.TEMPLATE_TOO_LARGE


async def test_a_template_over_the_bound_by_its_strings_is_measured_whole() -> None:
    """Few items, long strings: the count alone passes, the projection does not."""
    eng = engine(Registry(), failure_policy="closed")
    limited(eng, template_bytes=8192)
    obj = tolerating(30, "long")
    for toleration in obj["spec"]["template"]["spec"]["tolerations"]:
        toleration["key"] = "k" * 253 + toleration["key"][-6:]
    assert policy.least_projected_bytes(obj) < 8192
    size = policy.extract(obj).template.projected_bytes
    outcome = await eng.review(obj, operation="CREATE")
    assert outcome.reason == admission.TEMPLATE_TOO_LARGE and not outcome.allowed
    assert outcome.message.startswith(
        f"the pod template's scheduling fields take {size} bytes, more than "
    )
