"""What an offline check assumes of nodes it only knows the platform of."""

from __future__ import annotations

from archwarden import policy
from tests.policy import objects

NODES = policy.nodes_from_platforms(["linux/amd64", "linux/arm64"])


def names(workload: policy.Workload) -> list[str]:
    return [n.name for n in policy.candidate_nodes(workload, NODES)]


def test_synthetic_nodes_carry_the_beta_platform_labels() -> None:
    pinned = policy.extract(objects.pod("x", nodeSelector={"beta.kubernetes.io/arch": "arm64"}))
    assert names(pinned) == ["linux-arm64"]
    assert policy.assume_unmodelled(pinned) == (pinned, ())


def test_constraints_on_unmodelled_labels_are_assumed_and_platform_pins_kept() -> None:
    term_ssd = [{"key": "disktype", "operator": "In", "values": ["ssd"]}]
    term_arm = [
        {"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]},
        {"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist"},
        {"key": "topology.kubernetes.io/zone", "operator": "Exists"},
    ]
    both = policy.extract(objects.pod("x", affinity=objects.arch_affinity(term_arm)))
    assert names(both) == []
    relaxed, assumed = policy.assume_unmodelled(both)
    assert names(relaxed) == ["linux-arm64"]  # the arch pin holds; DoesNotExist already did
    assert assumed == ("node affinity topology.kubernetes.io/zone Exists",)

    # Terms are alternatives: one that was nothing but assumptions admits every node.
    either = policy.extract(objects.pod("x", affinity=objects.arch_affinity(term_arm, term_ssd)))
    relaxed, assumed = policy.assume_unmodelled(either)
    assert relaxed.template.required_terms is None
    assert names(relaxed) == ["linux-amd64", "linux-arm64"]
    assert assumed == (
        "node affinity topology.kubernetes.io/zone Exists",
        "node affinity disktype In [ssd]",
    )


def test_node_names_are_assumed() -> None:
    bound = policy.extract(
        objects.pod(
            "x",
            nodeName="worker-7",
            nodeSelector={"kubernetes.io/hostname": "worker-7", "kubernetes.io/arch": "arm64"},
        )
    )
    relaxed, assumed = policy.assume_unmodelled(bound)
    assert names(relaxed) == ["linux-arm64"]
    assert assumed == ("nodeSelector kubernetes.io/hostname=worker-7", "nodeName worker-7")
