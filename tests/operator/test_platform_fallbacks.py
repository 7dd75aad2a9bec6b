"""The webhook honours platforms.* settings: an arm64 node runs 32-bit arm only when allowed."""

from __future__ import annotations

import json

from archwarden import settings
from tests.operator.test_review_bounds import SlowRegistry, engine, index_response, pod

HOST = "registry.test"
ARM_V7_ONLY = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:" + "7" * 64,
                "size": 1,
                "platform": {"os": "linux", "architecture": "arm", "variant": "v7"},
            }
        ],
    }
).encode()


def registry_with_arm_v7() -> SlowRegistry:
    fake = SlowRegistry()
    fake.fast["team/armhf"] = index_response(ARM_V7_ONLY)
    return fake


async def test_arm64_nodes_refuse_arm_v7_images_by_default_and_say_how_to_allow_them() -> None:
    outcome = await engine(registry_with_arm_v7()).review(
        pod(f"{HOST}/team/armhf:1"), operation="CREATE"
    )
    assert not outcome.allowed
    assert (
        "arm64 nodes do not run linux/arm/v7 here: set platforms.arm64RunsArm32 or label nodes "
        "archwarden.io/runs-arm32=true" in outcome.message
    )


async def test_platforms_arm64_runs_arm32_admits_them() -> None:
    eng = engine(registry_with_arm_v7(), platforms=settings.PlatformSettings(arm64_runs_arm32=True))
    outcome = await eng.review(pod(f"{HOST}/team/armhf:1"), operation="CREATE")
    assert outcome.allowed and outcome.warnings == ()
