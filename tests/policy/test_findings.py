"""Tag drift, pending pods and exec format errors: the pure findings."""

from __future__ import annotations

from archwarden import platforms, policy

AMD64 = platforms.parse("linux/amd64")
ARM64 = platforms.parse("linux/arm64")
ARMV7 = platforms.parse("linux/arm/v7")
S390X = platforms.parse_node("linux/s390x")


def test_lost_platforms_are_only_those_needed() -> None:
    nodes = [platforms.parse_node("linux/arm64"), platforms.parse_node("linux/amd64")]
    assert policy.lost_platforms((AMD64, ARM64), (AMD64,), nodes) == ("linux/arm64",)
    assert policy.lost_platforms((AMD64, ARM64), (AMD64,), nodes[1:]) == ()
    # Where arm64 nodes run arm/v7 images, an index trading arm64 for arm/v7 lost nothing there.
    arm32 = platforms.Fallbacks(arm32_on_arm64=True)
    assert policy.lost_platforms((AMD64, ARM64), (AMD64, ARMV7), nodes, arm32) == ()
    assert policy.lost_platforms((AMD64, ARM64), (AMD64, ARMV7), nodes) == ("linux/arm64",)


def test_pending_is_explained_only_when_no_node_platform_fits() -> None:
    nodes = {platforms.parse_node("linux/amd64"), platforms.parse_node("linux/arm64")}
    multi = [("reg/web:1", (AMD64, ARM64))]
    assert policy.pending_message(multi, nodes) is None
    assert policy.pending_message(multi, nodes, ("arm64",)) is None
    message = policy.pending_message(multi, nodes, ("s390x",))
    assert message == (
        "no node matches this pod's architecture: image reg/web:1 supports linux/amd64 and "
        "linux/arm64 only; the pod asks for s390x; the nodes are linux/amd64 and linux/arm64"
    )
    only_s390x = policy.pending_message([("reg/mf:1", (platforms.parse("linux/s390x"),))], nodes)
    assert only_s390x is not None and "supports linux/s390x only" in only_s390x


def test_exec_format_errors_are_recognised_and_explained() -> None:
    assert policy.exec_format_error("exec /app: exec format error")
    assert policy.exec_format_error("... Exec Format Error: unknown")
    assert not policy.exec_format_error("back-off 10s restarting failed container")
    said = policy.exec_format_message(
        "c", "reg/x:1", (S390X,), "n1", platforms.parse_node("linux/amd64")
    )
    assert said == (
        "container c (image reg/x:1) failed with exec format error on node n1 (linux/amd64): "
        "the image says it supports linux/s390x only"
    )
    lied = policy.exec_format_message(
        "c", "reg/x:1", (AMD64,), "n1", platforms.parse_node("linux/amd64")
    )
    assert lied.endswith("so its binary does not match what the image says")
    unknown = policy.exec_format_message("c", "reg/x:1", None, "n1", None)
    assert unknown.endswith("on node n1: its platforms are not known to archwarden")
    unread = policy.exec_format_message("c", "reg/x:1", None, "n1", None, "registry reg: 503")
    assert unread.endswith("on node n1: its platforms could not be read: registry reg: 503")
