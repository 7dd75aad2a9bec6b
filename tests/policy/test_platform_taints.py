"""Architecture taints (GKE's ``kubernetes.io/arch=arm64:NoSchedule`` on every Arm node).

A pod all of whose images run on the tainted arch, and whose own constraints allow those nodes,
is judged to use them and gets the toleration; nothing else is ever tolerated.
"""

from __future__ import annotations

from typing import Any

from archwarden.policy import (
    ImageAnswer,
    Inventory,
    Mode,
    Node,
    PlatformTaint,
    ProvisionableClass,
    Source,
    Taint,
    Toleration,
    candidate_nodes,
    concerned,
    decide,
    extract,
    node_from_object,
    pod_patch,
    settled,
    template_patch,
)
from archwarden.policy._workloads import Requirement
from tests.policy import objects
from tests.policy.objects import plats

ARCH = "kubernetes.io/arch"
MULTI = "registry.local/multi:1"
AMD64_ONLY = "registry.local/amd:1"
ANSWERS: dict[str, ImageAnswer] = {
    MULTI: plats("linux/amd64", "linux/arm64"),
    AMD64_ONLY: plats("linux/amd64"),
}
ARM_TAINT = {"key": ARCH, "value": "arm64", "effect": "NoSchedule"}
ARM_TOLERATION = Toleration(ARCH, "Equal", "arm64", "NoSchedule")


def _cluster(*arm_taints: dict[str, str]) -> list[Node]:
    return [
        node_from_object(objects.node("amd-0", "amd64")),
        node_from_object(objects.node("arm-0", "arm64", taints=list(arm_taints))),
        node_from_object(objects.node("arm-1", "arm64", taints=list(arm_taints))),
    ]


def _tolerations(pod: dict[str, Any]) -> list[dict[str, str]]:
    found: list[dict[str, str]] = pod["spec"].get("tolerations", [])
    return found


def test_a_multi_arch_pod_is_placed_on_tainted_arm64_nodes_with_the_toleration() -> None:
    cluster = _cluster(ARM_TAINT)
    pod = objects.pod(MULTI)
    decision = decide(extract(pod), cluster, ANSWERS)
    assert decision.allowed
    assert decision.compatible_nodes == ("amd-0", "arm-0", "arm-1")
    assert decision.placement is not None
    assert decision.placement.arches == ("amd64", "arm64")
    assert decision.tolerations == (ARM_TOLERATION,)
    patched = objects.apply_patch(pod, pod_patch(pod, decision))
    assert _tolerations(patched) == [
        {"key": ARCH, "operator": "Equal", "value": "arm64", "effect": "NoSchedule"}
    ]
    assert {n.name for n in candidate_nodes(extract(patched), cluster)} == {
        "amd-0",
        "arm-0",
        "arm-1",
    }


def test_judged_by_class_the_same() -> None:
    inventory = Inventory()
    for node in _cluster(ARM_TAINT):
        inventory.apply(node.name, node)
    decision = decide(extract(objects.pod(MULTI)), inventory, ANSWERS)
    assert decision.tolerations == (ARM_TOLERATION,)
    assert decision.node_platforms == ("linux/amd64", "linux/arm64")


def test_an_amd64_only_image_never_gets_the_arm64_toleration() -> None:
    cluster = _cluster(ARM_TAINT)
    pod = objects.pod(MULTI, AMD64_ONLY)
    decision = decide(extract(pod), cluster, ANSWERS)
    assert decision.compatible_nodes == ("amd-0",)
    assert decision.incompatible_nodes == ()  # the tainted nodes stay no candidates
    assert decision.tolerations == ()
    assert "tolerations" not in objects.apply_patch(pod, pod_patch(pod, decision))["spec"]


def test_a_pod_whose_own_selector_excludes_arm64_gets_nothing() -> None:
    pod = objects.pod(MULTI, nodeSelector={ARCH: "amd64"})
    decision = decide(extract(pod), _cluster(ARM_TAINT), ANSWERS)
    assert decision.compatible_nodes == ("amd-0",)
    assert decision.tolerations == ()


def test_a_taint_with_another_key_or_value_is_never_tolerated() -> None:
    for taint in (
        {"key": "arch", "value": "arm64", "effect": "NoSchedule"},
        {"key": ARCH, "value": "amd64", "effect": "NoSchedule"},  # not the node's own arch
        {"key": ARCH, "value": "arm64", "effect": "NoExecute"},  # not a default effect
    ):
        decision = decide(extract(objects.pod(MULTI)), _cluster(taint), ANSWERS)
        assert decision.compatible_nodes == ("amd-0",), taint
        assert decision.tolerations == (), taint


def test_a_prefer_no_schedule_taint_is_tolerated_so_the_nodes_score_as_others() -> None:
    taint = {"key": ARCH, "value": "arm64", "effect": "PreferNoSchedule"}
    decision = decide(extract(objects.pod(MULTI)), _cluster(taint), ANSWERS)
    assert decision.compatible_nodes == ("amd-0", "arm-0", "arm-1")
    assert decision.tolerations == (Toleration(ARCH, "Equal", "arm64", "PreferNoSchedule"),)


def test_no_platform_taints_configured_keeps_the_scheduler_reading() -> None:
    decision = decide(extract(objects.pod(MULTI)), _cluster(ARM_TAINT), ANSWERS, platform_taints=())
    assert decision.compatible_nodes == ("amd-0",)
    assert decision.tolerations == ()


def test_a_configured_key_is_tolerated() -> None:
    taint = {"key": "example.com/arch", "value": "arm64", "effect": "NoSchedule"}
    configured = (PlatformTaint("example.com/arch", frozenset({"NoSchedule"})),)
    decision = decide(
        extract(objects.pod(MULTI)), _cluster(taint), ANSWERS, platform_taints=configured
    )
    assert decision.tolerations == (Toleration("example.com/arch", "Equal", "arm64", "NoSchedule"),)


def test_a_pod_that_already_tolerates_the_taint_is_judged_as_before() -> None:
    own = {"key": ARCH, "operator": "Exists"}
    pod = objects.pod(MULTI, tolerations=[own])
    decision = decide(extract(pod), _cluster(ARM_TAINT), ANSWERS)
    assert decision.compatible_nodes == ("amd-0", "arm-0", "arm-1")
    assert decision.tolerations == ()
    assert _tolerations(objects.apply_patch(pod, pod_patch(pod, decision))) == [own]


def test_an_uninspected_image_opts_in_to_nothing() -> None:
    answers = {MULTI: ANSWERS[MULTI]}  # the second image is unknown
    decision = decide(
        extract(objects.pod(MULTI, AMD64_ONLY.replace("amd", "other"))),
        _cluster(ARM_TAINT),
        answers,
        mode=Mode.WARN,
    )
    assert decision.tolerations == ()


def test_the_toleration_patch_is_idempotent_and_keeps_the_users_tolerations() -> None:
    user = {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
    pod = objects.pod(MULTI, tolerations=[user])
    cluster = _cluster(ARM_TAINT)
    decision = decide(extract(pod), cluster, ANSWERS)
    patched = objects.apply_patch(pod, pod_patch(pod, decision))
    assert _tolerations(patched) == [
        user,
        {"key": ARCH, "operator": "Equal", "value": "arm64", "effect": "NoSchedule"},
    ]
    # The same decision applied twice (a retried review) adds nothing more.
    assert objects.apply_patch(patched, pod_patch(patched, decision)) == patched
    again = decide(extract(patched), cluster, ANSWERS)
    assert again.tolerations == ()
    assert objects.apply_patch(patched, pod_patch(patched, again)) == patched


def test_workload_templates_get_the_toleration_too() -> None:
    deployment = objects.workload("Deployment", objects.pod_spec(MULTI))
    decision = decide(extract(deployment), _cluster(ARM_TAINT), ANSWERS)
    patched = objects.apply_patch(deployment, template_patch(deployment, decision))
    assert patched["spec"]["template"]["spec"]["tolerations"] == [
        {"key": ARCH, "operator": "Equal", "value": "arm64", "effect": "NoSchedule"}
    ]


def test_a_daemonset_is_never_widened_onto_tainted_nodes() -> None:
    daemonset = objects.workload("DaemonSet", objects.pod_spec(MULTI))
    decision = decide(extract(daemonset), _cluster(ARM_TAINT), ANSWERS)
    assert decision.compatible_nodes == ("amd-0",)
    assert decision.tolerations == ()


def test_a_tainted_arm64_nodepool_counts_for_a_pod_that_runs_on_arm64() -> None:
    pool = ProvisionableClass(
        Source("NodePool", "arm"),
        plats("linux/arm64"),
        taints=(Taint(ARCH, "arm64", "NoSchedule"),),
        every_taint=True,
    )
    amd = [node_from_object(objects.node("amd-0", "amd64", taints=[ARM_TAINT]))]
    pod = objects.pod("registry.local/arm:1")
    answers: dict[str, ImageAnswer] = {"registry.local/arm:1": plats("linux/arm64")}
    decision = decide(extract(pod), amd, answers, capacity=[pool])
    assert decision.provisionable_sources == ("NodePool arm",)
    assert decision.tolerations == (ARM_TOLERATION,)
    assert decision.placement is not None
    assert decision.placement.terms == ((Requirement(ARCH, "In", ("arm64",)),),)
    # An amd64-only image cannot use the pool: no toleration, no capacity.
    other = decide(extract(objects.pod(AMD64_ONLY)), [], ANSWERS, capacity=[pool])
    assert other.provisionable_sources == ()
    assert other.tolerations == ()


def test_a_change_to_a_tainted_arm64_node_concerns_a_pod_that_may_opt_in() -> None:
    # Re-evaluation on node changes skips unconcerned workloads: the decision above used the
    # tainted nodes, so a change to one of them must not be skipped.
    arm = _cluster(ARM_TAINT)[1]
    workload = extract(objects.pod(MULTI))
    assert concerned(workload, [arm])
    assert not concerned(workload, [arm], ())
    pinned = extract(objects.pod(MULTI, nodeSelector={ARCH: "amd64"}))
    assert not concerned(pinned, [arm])


def test_answers_so_far_never_settle_a_denial_an_opt_in_would_undo() -> None:
    # Only the arm64 nodes (tainted) run the first image; the second is still outstanding.
    arm_only = "registry.local/arm:1"
    pod = extract(objects.pod(arm_only, MULTI))
    partial: dict[str, ImageAnswer] = {arm_only: plats("linux/arm64")}
    assert not settled(pod, _cluster(ARM_TAINT), partial)
    decision = decide(pod, _cluster(ARM_TAINT), {**partial, MULTI: ANSWERS[MULTI]})
    assert decision.allowed and decision.tolerations == (ARM_TOLERATION,)
