"""The readiness report's computation: pure code over workloads, nodes and answers."""

from __future__ import annotations

from typing import Any

from archwarden import platforms, policy, readiness
from tests.policy import objects

NODES = policy.nodes_from_platforms(
    ["linux/amd64", "linux/amd64", "linux/arm64", "linux/ppc64le", "windows/amd64"]
)

WEB = "registry.example/shop/web:1"  # amd64 + arm64
LEGACY = "registry.example/shop/legacy:2.3"  # amd64 only
TOOL = "docker.io/library/busybox:1"  # every linux platform
ARM32 = "quay.example/iot/agent:1"  # arm/v7 only
WIN = "mcr.example/windows/servercore:ltsc2022"
GONE = "registry.example/shop/gone:1"

ANSWERS: dict[str, policy.ImageAnswer] = {
    WEB: (platforms.parse("linux/amd64"), platforms.parse("linux/arm64")),
    LEGACY: (platforms.parse("linux/amd64"),),
    TOOL: tuple(platforms.parse(p) for p in ("linux/amd64", "linux/arm64", "linux/ppc64le")),
    ARM32: (platforms.parse("linux/arm/v7"),),
    WIN: (platforms.normalize("windows", "amd64", os_version="10.0.20348.1"),),
    GONE: policy.ImageFailure("registry registry.example: manifest unknown: shop/gone:1"),
}


def workload(
    kind: str, name: str, *images: str, namespace: str = "shop", pod: dict[str, Any] | None = None
) -> policy.Workload:
    spec: dict[str, Any] = {
        "containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)],
        **(pod or {}),
    }
    obj: dict[str, Any] = {"kind": kind, "metadata": {"name": name, "namespace": namespace}}
    if kind == "Pod":
        obj["spec"] = spec
    elif kind == "CronJob":
        obj["spec"] = {"jobTemplate": {"spec": {"template": {"spec": spec}}}}
    else:
        obj["spec"] = {"template": {"spec": spec}}
    return policy.extract(obj)


def rows(report: readiness.Report) -> dict[str, readiness.WorkloadRow]:
    return {row.key: row for row in report.workloads}


def test_each_workload_gets_its_platforms_and_where_it_could_run() -> None:
    report = readiness.build(
        [
            workload("Deployment", "web", WEB, TOOL),
            workload("StatefulSet", "db", LEGACY, TOOL),
            workload("Pod", "win", WIN, namespace="windows"),
            workload(
                "Deployment", "pinned", WEB, pod={"nodeSelector": {"kubernetes.io/arch": "amd64"}}
            ),
        ],
        NODES,
        ANSWERS,
    )
    by_key = rows(report)
    web = by_key["shop/Deployment/web"]
    assert web.common_platforms == ("linux/amd64", "linux/arm64")
    assert web.runs_on == ("linux/amd64", "linux/arm64")
    assert web.readiness is readiness.Readiness.READY
    assert [i.platforms for i in web.images] == [
        ("linux/amd64", "linux/arm64"),
        ("linux/amd64", "linux/arm64", "linux/ppc64le"),
    ]
    db = by_key["shop/StatefulSet/db"]
    assert db.runs_on == ("linux/amd64",)
    assert db.readiness is readiness.Readiness.BLOCKED
    assert db.blocking_images == (LEGACY,)
    assert by_key["windows/Pod/win"].runs_on == ("windows/amd64",)
    # Its own pin keeps it on amd64 today; arm64-ready all the same.
    pinned = by_key["shop/Deployment/pinned"]
    assert pinned.schedulable_on == ("linux/amd64",)
    assert pinned.runs_on == ("linux/amd64", "linux/arm64")
    assert pinned.readiness is readiness.Readiness.READY
    assert report.node_platforms == (
        ("linux/amd64", 2),
        ("linux/arm64", 1),
        ("linux/ppc64le", 1),
        ("windows/amd64", 1),
    )


def test_nowhere_to_run_is_the_engines_mismatch() -> None:
    report = readiness.build([workload("Job", "both", LEGACY, ARM32)], NODES, ANSWERS)
    (row,) = report.workloads
    assert row.runs_on == ()
    assert row.common_platforms == ()
    assert row.verdict == "ArchitectureMismatch"
    assert "linux/amd64" in row.message and "linux/arm/v7" in row.message


def test_arm32_images_count_for_arm64_only_when_the_nodes_run_them() -> None:
    job = [workload("CronJob", "agent", ARM32)]
    assert readiness.build(job, NODES, ANSWERS).workloads[0].readiness is (
        readiness.Readiness.BLOCKED
    )
    lenient = readiness.build(job, NODES, ANSWERS, fallbacks=platforms.ALL_FALLBACKS)
    assert lenient.workloads[0].readiness is readiness.Readiness.READY
    assert lenient.workloads[0].runs_on == ("linux/arm64",)


def test_an_image_not_inspected_makes_unknown_unless_another_blocks() -> None:
    report = readiness.build(
        [workload("Deployment", "a", WEB, GONE), workload("Deployment", "b", LEGACY, GONE)],
        NODES,
        ANSWERS,
    )
    a, b = report.workloads
    assert a.readiness is readiness.Readiness.UNKNOWN
    assert a.runs_on == () and a.common_platforms == () and a.schedulable_on == ()
    assert a.images[1].error.startswith("registry registry.example")
    assert b.readiness is readiness.Readiness.BLOCKED
    assert report.to_json()["summary"] == {
        "workloads": 2,
        "arm64Ready": 0,
        "arm64Blocked": 1,
        "arm64Unknown": 1,
    }


def test_blockers_grouped_by_registry_and_owner_most_workloads_first() -> None:
    report = readiness.build(
        [
            workload("Deployment", "one", LEGACY),
            workload("Deployment", "two", LEGACY, WEB),
            workload("DaemonSet", "agent", ARM32, namespace="edge"),
            workload("Pod", "win", WIN, namespace="windows"),
            workload("CronJob", "fine", TOOL),
        ],
        NODES,
        ANSWERS,
    )
    assert [(g.registry, g.owner, g.workloads) for g in report.blockers] == [
        ("registry.example", "shop", ("shop/Deployment/one", "shop/Deployment/two")),
        ("mcr.example", "windows", ("windows/Pod/win",)),
        ("quay.example", "iot", ("edge/DaemonSet/agent",)),
    ]
    assert report.blockers[0].images == (
        readiness.BlockingImage(
            LEGACY,
            ("linux/amd64",),
            ("shop/Deployment/one", "shop/Deployment/two"),
            readiness.Totals(workloads=2),
        ),
    )
    data = report.to_json()
    assert data["summary"]["arm64Ready"] == 1
    assert data["blockers"][0] == {
        "registry": "registry.example",
        "owner": "shop",
        "workloads": 2,
        "images": [
            {
                "image": LEGACY,
                "platforms": ["linux/amd64"],
                "workloads": ["shop/Deployment/one", "shop/Deployment/two"],
                "heldBack": {"workloads": 2, "replicas": 0, "cpu": 0.0, "memory": 0},
            }
        ],
        "heldBack": {"workloads": 2, "replicas": 0, "cpu": 0.0, "memory": 0},
    }


def test_owner_of_official_and_one_component_images() -> None:
    report = readiness.build(
        [workload("Pod", "p", "nginx:1", "127.0.0.1:5000/solo:1")],
        NODES,
        {
            "nginx:1": (platforms.parse("linux/amd64"),),
            "127.0.0.1:5000/solo:1": (platforms.parse("linux/amd64"),),
        },
    )
    assert sorted((g.registry, g.owner) for g in report.blockers) == [
        ("127.0.0.1:5000", ""),
        ("docker.io", "library"),
    ]


def test_top_level_leaves_out_what_a_controller_owns() -> None:
    owned = {"ownerReferences": [{"kind": "ReplicaSet", "name": "x", "controller": True}]}
    merely_referenced = {"ownerReferences": [{"kind": "ConfigMap", "name": "y"}]}
    objects = [
        {"kind": "Deployment", "metadata": {"name": "d"}},
        {"kind": "ReplicaSet", "metadata": {"name": "d-1", **owned}},
        {"kind": "ReplicaSet", "metadata": {"name": "bare"}},
        {"kind": "Pod", "metadata": {"name": "d-1-x", **owned}},
        {"kind": "Pod", "metadata": {"name": "bare"}},
        {"kind": "Pod", "metadata": {"name": "referenced", **merely_referenced}},
        {"kind": "Job", "metadata": {"name": "cron-1", **owned}},
        {"kind": "Service", "metadata": {"name": "svc"}},
    ]
    assert [(o["kind"], o["metadata"]["name"]) for o in readiness.top_level(objects)] == [
        ("Deployment", "d"),
        ("ReplicaSet", "bare"),
        ("Pod", "bare"),
        ("Pod", "referenced"),
    ]


def test_table_lists_rows_images_and_the_summary() -> None:
    report = readiness.build(
        [workload("Deployment", "web", WEB), workload("Deployment", "legacy", LEGACY)],
        NODES,
        ANSWERS,
    )
    lines = readiness.table(report).splitlines()
    assert lines[0].split() == [
        "WORKLOAD",
        "ARM64",
        "REPLICAS",
        "CPU",
        "MEMORY",
        "VERDICT",
        "RUNS",
        "ON",
        "SCHEDULABLE",
        "ON",
    ]
    # Not weighed (no weights given): nothing requested.
    assert lines[1].split() == [
        "shop/Deployment/legacy",
        "blocked",
        "0",
        "0",
        "0",
        "Compatible",
        "linux/amd64",
        "linux/amd64",
    ]
    assert lines[2].split() == [LEGACY, "linux/amd64"]
    assert lines[3].split()[:2] == ["shop/Deployment/web", "ready"]
    assert (
        "arm64: 1 of 2 workloads could move (every image has linux/arm64); "
        "1 blocked, 0 unknown (an image could not be inspected)"
    ) in lines
    assert lines[-2:] == [
        "  registry.example shop: 1 workload, 0 replicas, 0 CPU, 0 memory",
        f"    {LEGACY} (linux/amd64) holds back 0 CPU, 0: blocks shop/Deployment/legacy",
    ]


def test_the_table_escapes_control_characters_in_names_images_and_errors() -> None:
    # An image string and a registry error with an escape sequence and a newline: printed raw,
    # they would recolour the terminal and forge a row.
    hostile = "registry.example/shop/evil:1\x1b[2J\nshop/Deployment/forged  ready"
    answers = {**ANSWERS, hostile: policy.ImageFailure("boom\x1b[31m\r\nforged")}
    report = readiness.build([workload("Deployment", "evil\x07", hostile)], NODES, answers)
    text = readiness.table(report)
    assert not any(ch in text for ch in "\x1b\x07\r")
    assert "evil:1\\x1b[2J\\x0ashop/Deployment/forged" in text
    assert "error: boom\\x1b[31m\\x0d\\x0aforged" in text
    assert not any(line.startswith("shop/Deployment/forged") for line in text.splitlines())


def test_schedulable_today_reads_the_configured_platform_taints() -> None:
    # GKE's Arm pool: every arm64 node tainted kubernetes.io/arch=arm64:NoSchedule.
    taint = {"key": "kubernetes.io/arch", "value": "arm64", "effect": "NoSchedule"}
    nodes = [
        policy.node_from_object(objects.node("amd-0", "amd64")),
        policy.node_from_object(objects.node("arm-0", "arm64", taints=[taint])),
    ]
    web = workload("Deployment", "web", WEB)

    (default,) = readiness.build([web], nodes, ANSWERS).workloads
    (scheduler,) = readiness.build([web], nodes, ANSWERS, platform_taints=()).workloads

    assert default.schedulable_on == ("linux/amd64", "linux/arm64")
    # As the scheduler reads the taint, without the toleration archwarden would add.
    assert scheduler.schedulable_on == ("linux/amd64",)
    assert default.runs_on == scheduler.runs_on == ("linux/amd64", "linux/arm64")
