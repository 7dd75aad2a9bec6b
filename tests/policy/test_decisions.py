from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from archwarden import platforms
from archwarden.policy import (
    Decision,
    FailurePolicy,
    ImageAnswer,
    ImageFailure,
    Mode,
    Node,
    Reason,
    Requirement,
    decide,
    extract,
    node_from_object,
    nodes_from_platforms,
    settled,
    stranded,
)
from archwarden.policy import _messages as messages
from tests.policy import objects
from tests.policy.objects import API, SIDECAR, plats

ARM_AND_PPC = [
    node_from_object(objects.node("arm-1", "arm64")),
    node_from_object(objects.node("arm-2", "arm64")),
    node_from_object(objects.node("arm-3", "arm64")),
    node_from_object(objects.node("ppc-1", "ppc64le")),
]
MIXED = [
    node_from_object(objects.node("amd-1", "amd64")),
    node_from_object(objects.node("amd-2", "amd64")),
    node_from_object(objects.node("arm-1", "arm64")),
    node_from_object(objects.node("arm-2", "arm64")),
]
AMD64_ONLY = {API: plats("linux/amd64")}
EXAMPLE = (
    "image registry.local/team/api:1.4 supports linux/amd64 only; the nodes this pod can use "
    "are linux/arm64 (3), linux/ppc64le (1); publish a multi-arch image or select amd64 nodes"
)


def _decide(
    raw: dict[str, Any], nodes: list[Node], answers: Mapping[str, ImageAnswer], **kw: Any
) -> Decision:
    return decide(extract(raw), nodes, answers, **kw)


def test_the_issue_example_is_denied_with_its_exact_message() -> None:
    decision = _decide(objects.pod(API), ARM_AND_PPC, AMD64_ONLY)
    assert not decision.allowed
    assert decision.reason == Reason.ARCHITECTURE_MISMATCH
    assert Reason.ARCHITECTURE_MISMATCH.value == "ArchitectureMismatch"
    assert decision.message == EXAMPLE
    assert decision.mismatch and decision.reason.is_mismatch
    assert decision.warnings == ()
    assert decision.compatible_nodes == ()
    assert decision.incompatible_nodes == ("arm-1", "arm-2", "arm-3", "ppc-1")
    assert decision.pod_platforms == ("linux/amd64",)
    assert decision.node_platforms == ()
    assert decision.placement is None


def test_warn_mode_allows_with_short_warnings() -> None:
    decision = _decide(objects.pod(API), ARM_AND_PPC, AMD64_ONLY, mode=Mode.WARN)
    assert decision.allowed and decision.mismatch
    assert decision.message == EXAMPLE
    assert decision.warnings == (
        "image registry.local/team/api:1.4 supports linux/amd64 only",
        "the nodes this pod can use are linux/arm64 (3), linux/ppc64le (1); "
        "publish a multi-arch image or select amd64 nodes",
    )


def test_audit_mode_allows_silently_but_records_the_mismatch() -> None:
    decision = _decide(objects.pod(API), ARM_AND_PPC, AMD64_ONLY, mode=Mode("audit"))
    assert decision.allowed and decision.mismatch
    assert decision.reason == Reason.ARCHITECTURE_MISMATCH
    assert decision.message == EXAMPLE
    assert decision.warnings == ()


def test_node_counts_sort_by_count_then_name() -> None:
    nodes = nodes_from_platforms(["linux/s390x", "linux/arm64", "linux/ppc64le", "linux/arm64"])
    decision = _decide(objects.pod(API), nodes, AMD64_ONLY)
    assert "are linux/arm64 (2), linux/ppc64le (1), linux/s390x (1);" in decision.message
    single = _decide(objects.pod(API), nodes[:1], AMD64_ONLY)
    assert "; the node this pod can use is linux/s390x (1); " in single.message


def test_compatible_deployment_on_mixed_nodes() -> None:
    raw = objects.workload("Deployment", objects.pod_spec(API))
    decision = _decide(raw, MIXED, AMD64_ONLY, mode=Mode.WARN)
    assert decision.allowed and not decision.mismatch
    assert decision.reason == Reason.COMPATIBLE
    assert (decision.message, decision.warnings) == ("", ())
    assert decision.compatible_nodes == ("amd-1", "amd-2")
    assert decision.incompatible_nodes == ("arm-1", "arm-2")
    assert decision.node_platforms == ("linux/amd64",)
    assert decision.placement is not None
    assert decision.placement.arches == ("amd64",)
    assert decision.placement.required == (Requirement("kubernetes.io/arch", "In", ("amd64",)),)


@pytest.mark.parametrize(
    ("spec", "pin"),
    [
        (
            {"nodeSelector": {"kubernetes.io/arch": "arm64"}},
            "nodeSelector kubernetes.io/arch=arm64",
        ),
        (
            {
                "affinity": objects.arch_affinity(
                    [{"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}]
                )
            },
            "node affinity kubernetes.io/arch In [arm64]",
        ),
    ],
)
def test_arch_pin_contradicting_the_image(spec: dict[str, Any], pin: str) -> None:
    decision = _decide(objects.pod(API, **spec), MIXED, AMD64_ONLY)
    assert not decision.allowed
    assert decision.reason == Reason.ARCHITECTURE_PIN_MISMATCH
    assert Reason.ARCHITECTURE_PIN_MISMATCH.value == "ArchitecturePinMismatch"
    assert decision.reason.is_mismatch and decision.mismatch
    assert decision.message == (
        f"{pin} contradicts image registry.local/team/api:1.4, which supports linux/amd64 only; "
        "remove the pin or publish an arm64 image"
    )


def test_arch_pin_with_several_arches_and_images() -> None:
    nodes = nodes_from_platforms(["linux/arm64", "linux/ppc64le", "linux/amd64"])
    affinity = objects.arch_affinity(
        [{"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}],
        [{"key": "kubernetes.io/arch", "operator": "In", "values": ["ppc64le"]}],
    )
    answers = {API: plats("linux/amd64"), SIDECAR: plats("linux/amd64", "linux/s390x")}
    decision = _decide(objects.pod(API, SIDECAR, affinity=affinity), nodes, answers)
    assert decision.message == (
        "node affinity kubernetes.io/arch In [arm64, ppc64le] contradicts image "
        "registry.local/team/api:1.4, which supports linux/amd64 only and image "
        "registry.local/team/sidecar:2, which supports linux/amd64 and linux/s390x only; "
        "remove the pin or publish images for arm64 or ppc64le"
    )


def test_a_pin_the_images_satisfy_is_not_blamed() -> None:
    # Pinned to arm64, the image has arm64, but the arm64 candidate is Windows: not the pin's fault.
    nodes = [Node("win-arm", "windows", "arm64", labels=(("kubernetes.io/arch", "arm64"),))]
    answers = {API: plats("linux/arm64")}
    decision = _decide(
        objects.pod(API, nodeSelector={"kubernetes.io/arch": "arm64"}), nodes, answers
    )
    assert decision.reason == Reason.ARCHITECTURE_MISMATCH
    assert decision.message.startswith(
        "image registry.local/team/api:1.4 supports linux/arm64 only;"
    )


def test_multi_image_intersection() -> None:
    nodes = nodes_from_platforms(["linux/amd64", "linux/arm64", "linux/s390x"])
    answers = {
        API: plats("linux/amd64", "linux/arm64"),
        SIDECAR: plats("linux/arm64", "linux/s390x"),
    }
    decision = _decide(objects.pod(API, SIDECAR), nodes, answers)
    assert decision.allowed and decision.reason == Reason.COMPATIBLE
    assert decision.compatible_nodes == ("linux-arm64",)
    assert decision.pod_platforms == ("linux/arm64",)
    assert decision.node_platforms == ("linux/arm64",)


def test_intersection_follows_runtime_fallbacks() -> None:
    # Where arm64 nodes run arm/v7 images, the pod's platforms include linux/arm64.
    nodes = nodes_from_platforms(["linux/arm64", "linux/arm/v6"])
    answers = {API: plats("linux/arm64", "linux/amd64"), SIDECAR: plats("linux/arm/v7")}
    arm32 = platforms.Fallbacks(arm32_on_arm64=True)
    decision = _decide(objects.pod(API, SIDECAR), nodes, answers, fallbacks=arm32)
    assert decision.pod_platforms == ("linux/arm64",)
    assert decision.compatible_nodes == ("linux-arm64",)


ARM64_NODES = [
    node_from_object(objects.node("arm-1", "arm64")),
    node_from_object(objects.node("arm-2", "arm64")),
]
ARM32_HINT = (
    "arm64 nodes do not run linux/arm/v7 here: set platforms.arm64RunsArm32 or label nodes "
    "archwarden.io/runs-arm32=true"
)


def test_arm64_nodes_do_not_run_32_bit_arm_images_by_default() -> None:
    decision = _decide(objects.pod(API), ARM64_NODES, {API: plats("linux/arm/v7")})
    assert not decision.allowed and decision.reason == Reason.ARCHITECTURE_MISMATCH
    assert decision.message == (
        f"image {API} supports linux/arm/v7 only; the nodes this pod can use are linux/arm64 (2); "
        f"{ARM32_HINT}; publish a multi-arch image or select arm nodes"
    )


def test_32_bit_arm_on_arm64_by_setting_or_per_node_label() -> None:
    answers = {API: plats("linux/arm/v7")}
    arm32 = platforms.Fallbacks(arm32_on_arm64=True)
    assert _decide(objects.pod(API), ARM64_NODES, answers, fallbacks=arm32).allowed
    labelled = node_from_object(
        objects.node("arm-3", "arm64", labels={"archwarden.io/runs-arm32": "true"})
    )
    decision = _decide(objects.pod(API), [*ARM64_NODES, labelled], answers)
    assert decision.allowed and decision.compatible_nodes == ("arm-3",)
    # A label also takes the fallback away from one node when the setting allows it.
    refusing = node_from_object(
        objects.node("arm-4", "arm64", labels={"archwarden.io/runs-arm32": "false"})
    )
    decision = _decide(objects.pod(API), [refusing], answers, fallbacks=arm32)
    assert not decision.allowed and ARM32_HINT in decision.message


def test_amd64_runs_386_unless_configured_otherwise() -> None:
    amd64 = [node_from_object(objects.node("amd-1", "amd64"))]
    answers = {API: plats("linux/386")}
    assert _decide(objects.pod(API), amd64, answers).allowed
    no_386 = platforms.Fallbacks(i386_on_amd64=False)
    decision = _decide(objects.pod(API), amd64, answers, fallbacks=no_386)
    assert not decision.allowed
    assert (
        "amd64 nodes do not run linux/386 here: set platforms.amd64Runs386 or label nodes "
        "archwarden.io/runs-386=true" in decision.message
    )
    labelled = node_from_object(
        objects.node("amd-2", "amd64", labels={"archwarden.io/runs-386": "false"})
    )
    assert not _decide(objects.pod(API), [labelled], answers).allowed


def test_only_the_images_that_cannot_run_are_named() -> None:
    answers = {API: plats("linux/amd64", "linux/arm64"), SIDECAR: plats("linux/amd64")}
    decision = _decide(objects.pod(API, SIDECAR), ARM_AND_PPC, answers)
    assert decision.message == (
        "image registry.local/team/sidecar:2 supports linux/amd64 only; the nodes this pod can use "
        "are linux/arm64 (3), linux/ppc64le (1); publish a multi-arch image or select amd64 nodes"
    )


def test_images_that_each_run_somewhere_but_never_together() -> None:
    nodes = nodes_from_platforms(["linux/amd64", "linux/arm64"])
    answers = {API: plats("linux/amd64"), SIDECAR: plats("linux/arm64")}
    raw = objects.pod(API)
    raw["spec"]["initContainers"] = [{"name": "init", "image": SIDECAR}]
    decision = _decide(raw, nodes, answers)
    assert not decision.allowed
    assert decision.message == (
        "no node can run all images: image registry.local/team/api:1.4 supports linux/amd64 only; "
        "image registry.local/team/sidecar:2 supports linux/arm64 only; the nodes this pod can use "
        "are linux/amd64 (1), linux/arm64 (1); publish multi-arch images"
    )


def test_ephemeral_container_images_count() -> None:
    raw = objects.pod("nginx", ephemeralContainers=[{"name": "dbg", "image": API}])
    answers = {"nginx": plats("linux/arm64", "linux/amd64"), **AMD64_ONLY}
    decision = _decide(raw, ARM_AND_PPC, answers)
    assert not decision.allowed
    assert decision.message.startswith("image registry.local/team/api:1.4 supports")


def test_no_candidate_nodes_is_not_our_business() -> None:
    raw = objects.pod(API, nodeSelector={"pool": "missing"})
    decision = _decide(raw, ARM_AND_PPC, AMD64_ONLY)
    assert decision.allowed and not decision.mismatch
    assert decision.reason == Reason.NO_CANDIDATE_NODES
    assert decision.message == (
        "no ready node matches this pod's nodeSelector, node affinity and tolerations; "
        "its images were checked against its own arch, os and build pins only"
    )
    assert decision.warnings == (
        "no ready node matches this pod's nodeSelector, node affinity and tolerations",
        "its images were checked against its own arch, os and build pins only",
    )
    failed = _decide(raw, ARM_AND_PPC, {API: ImageFailure("401 Unauthorized")})
    assert failed.reason == Reason.NO_CANDIDATE_NODES
    assert failed.message.startswith("no ready node matches")
    assert "image platforms were not checked" in failed.message
    assert _decide(raw, ARM_AND_PPC, AMD64_ONLY, mode=Mode.AUDIT).warnings == ()
    # Nodes whose platform is unknown are never judged.
    unknown = node_from_object(
        {
            "metadata": {"name": "bare"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }
    )
    assert _decide(objects.pod(API), [unknown], AMD64_ONLY).reason == Reason.NO_CANDIDATE_NODES


def test_a_pin_no_image_platform_satisfies_is_denied_even_with_no_node_matching() -> None:
    # The issue's case: a Windows-only image pinned to s390x, and no s390x node at all.
    raw = objects.pod(WIN_IMAGE, nodeSelector={"kubernetes.io/arch": "s390x"})
    decision = _decide(raw, ARM_AND_PPC, {WIN_IMAGE: _windows("10.0.20348.2527")})
    assert not decision.allowed and decision.mismatch
    assert decision.reason == Reason.ARCHITECTURE_PIN_MISMATCH
    assert decision.message == (
        f"nodeSelector kubernetes.io/arch=s390x contradicts image {WIN_IMAGE}, which supports "
        "windows/amd64 [os.version=10.0.20348.2527] only; remove the pin or publish an s390x image"
    )
    # warn mode admits it, with the same explanation as warnings
    warned = _decide(raw, ARM_AND_PPC, {WIN_IMAGE: _windows("10.0.20348.2527")}, mode=Mode.WARN)
    assert warned.allowed and warned.reason == Reason.ARCHITECTURE_PIN_MISMATCH


def test_os_and_build_pins_are_judged_too() -> None:
    linux = objects.pod(API, nodeSelector={"kubernetes.io/os": "windows"})
    decision = _decide(linux, ARM_AND_PPC, AMD64_ONLY)
    assert not decision.allowed and decision.reason == Reason.ARCHITECTURE_PIN_MISMATCH
    assert decision.message.startswith(
        f"nodeSelector kubernetes.io/os=windows contradicts image {API}, which supports "
    )
    assert decision.message.endswith("; remove the pin or publish an image that node can run")
    old_build = objects.pod(
        WIN_IMAGE,
        affinity=objects.arch_affinity(
            [
                {
                    "key": "node.kubernetes.io/windows-build",
                    "operator": "In",
                    "values": ["10.0.17763"],
                }
            ]
        ),
    )
    found = {WIN_IMAGE: _windows("10.0.20348.2527")}
    assert _decide(old_build, ARM_AND_PPC, found).reason == Reason.ARCHITECTURE_PIN_MISMATCH
    # The right build: nothing contradicts, the pod merely has no node yet.
    new_build = objects.pod(
        WIN_IMAGE, nodeSelector={"node.kubernetes.io/windows-build": "10.0.20348"}
    )
    assert _decide(new_build, ARM_AND_PPC, found).reason == Reason.NO_CANDIDATE_NODES


def test_a_pin_some_node_could_run_with_a_fallback_is_not_a_contradiction() -> None:
    # arm/v7 on arm64 runs where a node is labelled archwarden.io/runs-arm32=true: with no
    # arm64 node now, such a node may still come, so the pod is only warned about.
    raw = objects.pod(API, nodeSelector={"kubernetes.io/arch": "arm64", "pool": "none"})
    decision = _decide(raw, MIXED, {API: plats("linux/arm/v7")})
    assert decision.allowed and decision.reason == Reason.NO_CANDIDATE_NODES
    # 386 on s390x is no fallback of any node: denied.
    pinned = objects.pod(API, nodeSelector={"kubernetes.io/arch": "s390x"})
    assert _decide(pinned, MIXED, {API: plats("linux/386")}).reason == (
        Reason.ARCHITECTURE_PIN_MISMATCH
    )


def test_pod_without_images_is_skipped() -> None:
    raw = {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}}
    decision = _decide(raw, MIXED, {})
    assert decision.allowed and decision.reason == Reason.SKIPPED and decision.warnings == ()


FAILED = {API: ImageFailure("401 Unauthorized: authentication required")}


def test_failure_policy_open_allows_with_the_registry_error() -> None:
    decision = _decide(objects.pod(API), MIXED, FAILED, failure_policy=FailurePolicy.OPEN)
    assert decision.allowed and not decision.mismatch
    assert decision.reason == Reason.IMAGE_INSPECTION_FAILED
    assert Reason.IMAGE_INSPECTION_FAILED.value == "ImageInspectionFailed"
    assert decision.message == (
        "could not inspect image registry.local/team/api:1.4: 401 Unauthorized: authentication "
        "required; admitted without a platform check"
    )
    assert decision.warnings == (
        "could not inspect image registry.local/team/api:1.4: "
        "401 Unauthorized: authentication required",
        "admitted without a platform check",
    )
    assert decision.inspection_errors == ((API, "401 Unauthorized: authentication required"),)
    assert decision.pod_platforms == ()
    audit = _decide(objects.pod(API), MIXED, FAILED, mode=Mode.AUDIT)
    assert audit.allowed and audit.warnings == () and audit.reason == Reason.IMAGE_INSPECTION_FAILED


def test_failure_policy_closed_denies_with_the_registry_error() -> None:
    decision = _decide(objects.pod(API), MIXED, FAILED, failure_policy=FailurePolicy.CLOSED)
    assert not decision.allowed and not decision.mismatch
    assert decision.reason == Reason.IMAGE_INSPECTION_FAILED
    assert decision.message == (
        "could not inspect image registry.local/team/api:1.4: 401 Unauthorized: authentication "
        "required (failure policy closed)"
    )
    # Warn mode never denies.
    warned = _decide(
        objects.pod(API), MIXED, FAILED, mode=Mode.WARN, failure_policy=FailurePolicy.CLOSED
    )
    assert warned.allowed and warned.warnings


def test_a_certain_mismatch_denies_whatever_else_failed() -> None:
    answers: dict[str, ImageAnswer] = {API: plats("linux/amd64"), SIDECAR: ImageFailure("timeout")}
    decision = _decide(
        objects.pod(API, SIDECAR), ARM_AND_PPC, answers, failure_policy=FailurePolicy.OPEN
    )
    assert not decision.allowed and decision.mismatch
    assert decision.reason == Reason.ARCHITECTURE_MISMATCH
    assert decision.message == EXAMPLE
    assert decision.inspection_errors == ((SIDECAR, "timeout"),)


def test_partial_failure_still_narrows_placement() -> None:
    answers: dict[str, ImageAnswer] = {API: plats("linux/amd64"), SIDECAR: ImageFailure("timeout")}
    decision = _decide(objects.pod(API, SIDECAR), MIXED, answers)
    assert decision.allowed and decision.reason == Reason.IMAGE_INSPECTION_FAILED
    assert decision.compatible_nodes == ("amd-1", "amd-2")
    assert decision.placement is not None and decision.placement.arches == ("amd64",)
    assert decision.pod_platforms == ()  # unknown until every image is known


def test_missing_and_empty_answers_count_as_failures() -> None:
    decision = _decide(
        objects.pod(API, SIDECAR), MIXED, {SIDECAR: ()}, failure_policy=FailurePolicy.CLOSED
    )
    assert not decision.allowed
    assert decision.inspection_errors == (
        (API, "the image was not inspected"),
        (
            SIDECAR,
            "it is an OCI artifact, not an image: it names no platform and has nothing a "
            "container can run",
        ),
    )


def _daemonset_cluster() -> list[Node]:
    return nodes_from_platforms(["linux/amd64", "linux/arm64"] + ["linux/ppc64le"] * 6)


def test_daemonset_partially_incompatible_is_allowed_with_a_warning() -> None:
    raw = objects.workload("DaemonSet", objects.pod_spec(API))
    answers = {API: plats("linux/amd64", "linux/arm64")}
    decision = _decide(raw, _daemonset_cluster(), answers)
    assert decision.allowed and decision.mismatch
    assert decision.reason == Reason.PARTIAL_ARCHITECTURE_MISMATCH
    assert decision.message == (
        "6 of the 8 nodes this DaemonSet can use cannot run its images: linux-ppc64le, "
        "linux-ppc64le-2, linux-ppc64le-3, linux-ppc64le-4, linux-ppc64le-5 and 1 more; "
        "image registry.local/team/api:1.4 supports linux/amd64 and linux/arm64 only; "
        "those nodes are linux/ppc64le (6)"
    )
    assert decision.warnings and all(len(w) <= 120 for w in decision.warnings)
    assert _decide(raw, _daemonset_cluster(), answers, mode=Mode.AUDIT).warnings == ()
    # The same template as a Deployment is simply compatible: its pods get placed.
    deployment = objects.workload("Deployment", objects.pod_spec(API))
    assert _decide(deployment, _daemonset_cluster(), answers).reason == Reason.COMPATIBLE


def test_daemonset_no_node_can_run_is_denied() -> None:
    raw = objects.workload("DaemonSet", objects.pod_spec(API))
    decision = _decide(raw, ARM_AND_PPC, AMD64_ONLY)
    assert not decision.allowed and decision.reason == Reason.ARCHITECTURE_MISMATCH


WINDOWS = [
    node_from_object(objects.node("win-2019", "amd64", "windows", build="10.0.17763")),
    node_from_object(objects.node("win-2022", "amd64", "windows", build="10.0.20348")),
    node_from_object(objects.node("linux-1", "amd64")),
]
WIN_IMAGE = "mcr.microsoft.com/windows/servercore:ltsc2022"


def _windows(*builds: str) -> tuple[platforms.Platform, ...]:
    return tuple(platforms.normalize("windows", "amd64", os_version=b) for b in builds)


def test_windows_build_matching() -> None:
    answers: dict[str, ImageAnswer] = {WIN_IMAGE: _windows("10.0.20348.2527")}
    decision = _decide(objects.pod(WIN_IMAGE), WINDOWS, answers)
    assert decision.allowed
    assert decision.compatible_nodes == ("win-2022",)
    assert decision.incompatible_nodes == ("linux-1", "win-2019")
    assert decision.pod_platforms == ("windows/amd64",)
    assert decision.placement is not None
    assert decision.placement.required == (
        Requirement("kubernetes.io/arch", "In", ("amd64",)),
        Requirement("kubernetes.io/os", "In", ("windows",)),
        Requirement("node.kubernetes.io/windows-build", "In", ("10.0.20348",)),
    )
    # A 2019 image runs only on the 2019 host (process isolation needs the same build).
    old = _decide(objects.pod(WIN_IMAGE), WINDOWS, {WIN_IMAGE: _windows("10.0.17763.5329")})
    assert old.compatible_nodes == ("win-2019",)


def test_windows_mismatch_message_shows_builds() -> None:
    raw = objects.pod(WIN_IMAGE, nodeSelector={"node.kubernetes.io/windows-build": "10.0.20348"})
    decision = _decide(raw, WINDOWS, {WIN_IMAGE: _windows("10.0.17763.5329")})
    assert not decision.allowed
    assert decision.message == (
        "image mcr.microsoft.com/windows/servercore:ltsc2022 supports windows/amd64 "
        "[os.version=10.0.17763.5329] only; the node this pod can use is windows/amd64 "
        "[os.version=10.0.20348] (1); publish a multi-arch image or select windows/amd64 nodes"
    )


def test_stranded_workloads_after_an_inventory_change() -> None:
    workloads = {
        ("team", "api"): extract(objects.workload("Deployment", objects.pod_spec(API))),
        ("team", "multi"): extract(objects.workload("Deployment", objects.pod_spec(SIDECAR))),
        ("team", "unknown"): extract(objects.workload("Deployment", objects.pod_spec("other:1"))),
        ("team", "mixed"): extract(
            objects.workload("Deployment", objects.pod_spec(API, "other:1"))
        ),
    }
    cache = {**AMD64_ONLY, SIDECAR: plats("linux/amd64", "linux/arm64")}
    assert stranded(workloads, MIXED, cache) == {}
    arm_only = [n for n in MIXED if n.arch == "arm64"]
    left = stranded(workloads, iter(arm_only), cache)
    assert set(left) == {("team", "api"), ("team", "mixed")}
    assert left[("team", "api")].message.startswith("image registry.local/team/api:1.4 supports")


def test_warning_lines() -> None:
    assert messages.warning_lines("a; b; c") == ("a; b; c",)
    long_ref = "registry.local/" + "x" * 130 + ":1"
    lines = messages.warning_lines(f"image {long_ref} supports linux/amd64 only; tail", width=120)
    assert lines == (f"image {long_ref} supports linux/amd64 only", "tail")
    words = messages.warning_lines(" ".join(["word"] * 40), width=50)
    assert all(len(line) <= 50 for line in words) and " ".join(words) == " ".join(["word"] * 40)


@pytest.mark.parametrize(
    ("word", "expected"),
    [("arm64", "an"), ("amd64", "an"), ("s390x", "an"), ("ppc64le", "a"), ("riscv64", "a")],
)
def test_article(word: str, expected: str) -> None:
    assert messages.article(word) == expected


@pytest.mark.parametrize("spec", ["linux/arm64/v8", "linux/arm64"])
def test_platforms_flag_arm64_refuses_arm64_v9_images(spec: str) -> None:
    # containerd's default platform on arm64 is v8, written or not.
    nodes = nodes_from_platforms([spec])
    assert [n.platform.canonical for n in nodes] == ["linux/arm64"]
    v9 = platforms.parse("linux/arm64/v9")
    assert not platforms.node_can_run(nodes[0].platform, v9)
    assert platforms.node_can_run(nodes[0].platform, platforms.parse("linux/arm64"))


# --- settled: may a review stop resolving the images still outstanding? ----------------------


def test_settled_by_a_mismatch_in_enforce_mode_only() -> None:
    workload = extract(objects.pod(API, SIDECAR))
    assert settled(workload, ARM_AND_PPC, AMD64_ONLY)
    assert not settled(workload, ARM_AND_PPC, AMD64_ONLY, mode=Mode.WARN)
    assert not settled(workload, ARM_AND_PPC, {API: plats("linux/arm64")})
    assert not settled(workload, ARM_AND_PPC, {})


def test_settled_by_a_failure_only_when_failures_deny() -> None:
    workload = extract(objects.pod(API, SIDECAR))
    failed = {API: ImageFailure("401 Unauthorized")}
    assert settled(workload, ARM_AND_PPC, failed, failure_policy=FailurePolicy.CLOSED)
    assert not settled(workload, ARM_AND_PPC, failed, failure_policy=FailurePolicy.OPEN)
    assert not settled(
        workload, ARM_AND_PPC, failed, mode=Mode.AUDIT, failure_policy=FailurePolicy.CLOSED
    )
