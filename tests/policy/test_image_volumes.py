"""Image volumes (``spec.volumes[].image.reference``): the kubelet pulls them for the node's
platform like a container's image, so they count in every decision; an OCI artifact naming no
platform mounts on any node."""

from __future__ import annotations

from typing import Any

from archwarden import readiness
from archwarden.policy import (
    Container,
    ContainerKind,
    ImageAnswer,
    ImageFailure,
    Inventory,
    Mode,
    Reason,
    decide,
    extract,
    least_projected_bytes,
    node_from_object,
    nodes_from_platforms,
    pod_patch,
    scheduling_changed,
)
from tests.policy import objects
from tests.policy.objects import plats

APP = "registry.local/app:1"  # amd64 + arm64
TOOLS = "registry.local/tools:1"  # amd64 only: binaries the app runs from the volume
DATA = "registry.local/model:1"  # an OCI artifact: names no platform
ANSWERS: dict[str, ImageAnswer] = {
    APP: plats("linux/amd64", "linux/arm64"),
    TOOLS: plats("linux/amd64"),
    DATA: (),
}


def volume(name: str, reference: str) -> dict[str, Any]:
    return {"name": name, "image": {"reference": reference, "pullPolicy": "IfNotPresent"}}


def pod(*volumes: dict[str, Any], image: str = APP) -> dict[str, Any]:
    return objects.pod(image, volumes=[{"name": "scratch", "emptyDir": {}}, *volumes])


def arm64_pool() -> Inventory:
    inventory = Inventory()
    for node in nodes_from_platforms(["linux/arm64"]):
        inventory.apply(node.name, node)
    return inventory


def test_image_volumes_are_read_after_the_containers() -> None:
    workload = extract(pod(volume("tools", f" {TOOLS} "), volume("empty", "")))
    assert workload.template.containers[-1] == Container("tools", ContainerKind.VOLUME, TOOLS)
    assert workload.template.images == (APP, TOOLS)
    # The cheap bound counts it, as projected_bytes does.
    assert least_projected_bytes(pod(volume("tools", TOOLS))) > least_projected_bytes(pod())


def test_a_changed_volume_reference_is_a_scheduling_change() -> None:
    before, after = pod(volume("tools", TOOLS)), pod(volume("tools", DATA))
    assert scheduling_changed(before, after)
    assert not scheduling_changed(before, pod(volume("tools", TOOLS)))


def test_a_volume_image_no_node_can_run_denies_the_pod() -> None:
    decision = decide(
        extract(pod(volume("tools", TOOLS))), arm64_pool(), ANSWERS, mode=Mode.ENFORCE
    )
    assert not decision.allowed
    assert decision.reason is Reason.ARCHITECTURE_MISMATCH
    assert decision.message.startswith(
        f"image {TOOLS} (image volume tools) supports linux/amd64 only"
    )


def test_a_volume_image_narrows_the_placement() -> None:
    nodes = [
        node_from_object(objects.node("amd-0", "amd64")),
        node_from_object(objects.node("arm-0", "arm64")),
    ]
    raw = pod(volume("tools", TOOLS))
    decision = decide(extract(raw), nodes, ANSWERS, mode=Mode.ENFORCE)
    assert decision.allowed
    assert decision.pod_platforms == ("linux/amd64",)
    (affinity,) = [op for op in pod_patch(raw, decision) if op["path"] == "/spec/affinity"]
    assert "arm64" not in str(affinity["value"])


def test_an_artifact_mounts_anywhere_but_runs_nowhere() -> None:
    mounted = decide(extract(pod(volume("model", DATA))), arm64_pool(), ANSWERS, mode=Mode.ENFORCE)
    assert mounted.allowed and mounted.reason is Reason.COMPATIBLE
    assert mounted.pod_platforms == ("linux/amd64", "linux/arm64")

    # The same artifact as a container's image has nothing to run on any node.
    ran = decide(extract(pod(image=DATA)), arm64_pool(), ANSWERS, mode=Mode.ENFORCE)
    assert ran.reason is Reason.IMAGE_INSPECTION_FAILED
    assert "OCI artifact, not an image" in ran.message
    both = decide(
        extract(pod(volume("model", DATA), image=DATA)), arm64_pool(), ANSWERS, mode=Mode.ENFORCE
    )
    assert both.reason is Reason.IMAGE_INSPECTION_FAILED


def test_an_uninspected_volume_image_is_a_failure_like_a_containers() -> None:
    answers = {**ANSWERS, TOOLS: ImageFailure("registry registry.local: manifest unknown")}
    decision = decide(extract(pod(volume("tools", TOOLS))), arm64_pool(), answers)
    assert decision.reason is Reason.IMAGE_INSPECTION_FAILED
    assert "manifest unknown" in decision.message


def test_the_readiness_report_counts_volumes_and_lets_artifacts_pass() -> None:
    nodes = nodes_from_platforms(["linux/amd64", "linux/arm64"])
    workloads = [
        extract({**pod(volume("tools", TOOLS)), "metadata": {"name": "tools", "namespace": "a"}}),
        extract({**pod(volume("model", DATA)), "metadata": {"name": "model", "namespace": "a"}}),
    ]
    rows = {r.name: r for r in readiness.build(workloads, nodes, ANSWERS).workloads}
    assert rows["tools"].readiness is readiness.Readiness.BLOCKED
    assert rows["tools"].blocking_images == (TOOLS,)
    model = rows["model"]
    assert model.readiness is readiness.Readiness.READY
    assert [i.platforms for i in model.images] == [
        ("linux/amd64", "linux/arm64"),
        ("any (artifact)",),
    ]
    assert model.runs_on == ("linux/amd64", "linux/arm64")
