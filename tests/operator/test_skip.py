"""archwarden.io/skip is governed: skip.allowed says who may use it, skips are counted, and a
refused skip says so."""

from __future__ import annotations

from typing import Any

import pytest

from archwarden import settings
from tests.operator.test_admission_core import HOST, Registry, deployment, engine

REFUSED_UNLABELLED = (
    "archwarden: archwarden.io/skip is not allowed here (skip.allowed: labelledNamespaces); "
    'checked anyway: label the namespace archwarden.io/allow-skip="true" to allow it'
)


def skipping(image: str = f"{HOST}/team/legacy:1") -> dict[str, Any]:
    return deployment(image, annotations={"archwarden.io/skip": "true"})


def skipped_total(eng: Any, kind: str) -> float:
    value = eng.metrics.registry.get_sample_value("archwarden_skipped_total", {"kind": kind})
    return value or 0.0


async def test_only_labelled_namespaces_skip_by_default() -> None:
    # A tenant who can annotate a workload does not opt out of enforcement alone.
    assert settings.SkipSettings().allowed == "labelledNamespaces"
    outcome = await engine(Registry()).review(skipping(), operation="CREATE")
    assert not outcome.allowed
    assert outcome.message.endswith(
        "archwarden.io/skip is not allowed here (skip.allowed: labelledNamespaces)"
    )


async def test_everyone_may_skip_where_configured_and_skips_are_counted() -> None:
    fake = Registry()
    eng = engine(fake, skip=settings.SkipSettings(allowed="everyone"))
    outcome = await eng.review(skipping(), operation="CREATE")
    assert outcome.allowed and outcome.label == "skipped"
    assert [e.reason for e in outcome.events] == ["ArchitectureCheckSkipped"]
    assert skipped_total(eng, "Deployment") == 1
    assert fake.requests == []


async def test_labelled_namespaces_only() -> None:
    eng = engine(Registry(), skip=settings.SkipSettings(allowed="labelledNamespaces"))
    outcome = await eng.review(skipping(), operation="CREATE")
    assert not outcome.allowed
    assert outcome.message.endswith(
        "archwarden.io/skip is not allowed here (skip.allowed: labelledNamespaces)"
    )
    eng.namespace_allows_skip = {"team"}.__contains__
    assert (await eng.review(skipping(), operation="CREATE")).label == "skipped"
    assert skipped_total(eng, "Deployment") == 1


@pytest.mark.parametrize("allowed", ["nobody", "labelledNamespaces"])
async def test_a_refused_skip_is_checked_and_warns(allowed: str) -> None:
    eng = engine(Registry(), skip=settings.SkipSettings(allowed=allowed))
    eng.namespace_allows_skip = {"other"}.__contains__
    outcome = await eng.review(skipping(f"{HOST}/team/web:1"), operation="CREATE")
    assert outcome.allowed and outcome.label == "warned"
    expected = (
        REFUSED_UNLABELLED
        if allowed == "labelledNamespaces"
        else "archwarden: archwarden.io/skip is not allowed here (skip.allowed: nobody); "
        "checked anyway"
    )
    assert outcome.warnings == (expected,)
    assert skipped_total(eng, "Deployment") == 0
