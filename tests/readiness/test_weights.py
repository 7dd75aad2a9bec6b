"""Weighted readiness: the requests a workload holds, summed by readiness and namespace."""

from __future__ import annotations

import fractions
from typing import Any

import pytest

from archwarden import readiness
from tests.readiness.test_report import ANSWERS, ARM32, LEGACY, NODES, TOOL, WEB, workload

F = fractions.Fraction
MI = 2**20


def container(name: str, cpu: str | None = None, memory: str | None = None, **extra: Any) -> Any:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    return {"name": name, "image": "x", "resources": {"requests": requests}, **extra}


def requests(spec: dict[str, Any]) -> tuple[dict[str, fractions.Fraction], list[str]]:
    notes: list[str] = []
    return readiness.pod_requests(spec, notes), notes


def test_containers_add_up() -> None:
    found, notes = requests(
        {"containers": [container("a", "250m", "64Mi"), container("b", "1", "1Gi"), {"name": "c"}]}
    )
    assert found == {"cpu": F(5, 4), "memory": 64 * MI + 1024 * MI}
    assert notes == []


def test_the_largest_init_container_wins_when_it_needs_more() -> None:
    found, _ = requests(
        {
            "containers": [container("a", "100m", "64Mi")],
            "initContainers": [container("i1", "2", "32Mi"), container("i2", "500m", "16Mi")],
        }
    )
    # CPU: the first init container's 2 cores; memory: the containers' 64Mi.
    assert found == {"cpu": F(2), "memory": 64 * MI}


def test_sidecars_count_with_the_containers_and_under_later_init_containers() -> None:
    # The KEP's example (sig-node 753, "Resources calculation for scheduling"), as
    # component-helpers/resource/helpers.go computes it.
    found, _ = requests(
        {
            "containers": [container("app", "1")],
            "initContainers": [
                container("init1", "3"),
                container("sidecar", "1", restartPolicy="Always"),
                container("init2", "3"),
            ],
        }
    )
    # Containers 1 + sidecar 1 = 2; init2 runs beside the sidecar: 3 + 1 = 4.
    assert found == {"cpu": F(4)}


def test_pod_level_requests_replace_and_overhead_adds() -> None:
    found, _ = requests(
        {
            "containers": [container("a", "100m", "64Mi")],
            "resources": {"requests": {"cpu": "2"}},
            "overhead": {"cpu": "250m", "memory": "120Mi"},
        }
    )
    assert found == {"cpu": F(9, 4), "memory": 184 * MI}


@pytest.mark.parametrize("bad", ["lots", "-1", "1.2.3", True, None, "9" * 65])
def test_a_bad_quantity_counts_as_zero_and_is_noted(bad: Any) -> None:
    found, notes = requests(
        {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": bad, "memory": 512}}},
                container("b", "1"),
            ]
        }
    )
    assert found == {"cpu": F(1), "memory": F(512)}
    assert len(notes) == 1 and notes[0].startswith("containers[0].requests.cpu: not a quantity ")


def obj(kind: str, spec: dict[str, Any], **more: Any) -> dict[str, Any]:
    pod = {"containers": [container("a", "100m", "1Mi")]}
    if kind == "Pod":
        body = {**pod, **spec}
    elif kind == "CronJob":
        body = {"jobTemplate": {"spec": {"template": {"spec": pod}, **spec}}}
    else:
        body = {"template": {"spec": pod}, **spec}
    return {"kind": kind, "metadata": {"name": "w"}, "spec": body, **more}


@pytest.mark.parametrize(
    ("workload", "replicas"),
    [
        (obj("Deployment", {}), 1),
        (obj("Deployment", {"replicas": 3}), 3),
        (obj("Deployment", {"replicas": 0}), 0),
        (obj("StatefulSet", {"replicas": 2}), 2),
        (obj("ReplicaSet", {"replicas": 4}), 4),
        (obj("Job", {}), 1),
        (obj("Job", {"parallelism": 5}), 5),
        (obj("CronJob", {"parallelism": 2}), 2),
        (obj("Pod", {}), 1),
        (obj("DaemonSet", {}, status={"observedGeneration": 1, "desiredNumberScheduled": 6}), 6),
        (obj("DaemonSet", {}, status={"observedGeneration": 2, "desiredNumberScheduled": 0}), 0),
    ],
)
def test_replicas_by_kind(workload: dict[str, Any], replicas: int) -> None:
    weight = readiness.weigh(workload, nodes=9)
    assert (weight.replicas, weight.notes) == (replicas, ())
    assert (weight.cpu_millis, weight.memory_bytes) == (100, MI)
    assert weight.total_cpu_millis == 100 * replicas


@pytest.mark.parametrize("status", [None, {"desiredNumberScheduled": 0}])
def test_a_daemonset_its_controller_has_not_seen_counts_once_per_node(status: Any) -> None:
    weight = readiness.weigh(obj("DaemonSet", {}, status=status), nodes=9)
    assert weight.replicas == 9
    assert weight.notes == ("not yet counted by its controller: one pod per node (9)",)


def test_millicores_and_bytes_round_up_per_pod() -> None:
    spec = {"containers": [container("a", "100u", "0.5")]}
    weight = readiness.weigh({"kind": "Pod", "spec": spec}, nodes=1)
    assert (weight.cpu_millis, weight.memory_bytes) == (1, 1)


def test_notes_are_bounded() -> None:
    spec = {"containers": [container(f"c{i}", "bad") for i in range(20)]}
    weight = readiness.weigh({"kind": "Pod", "spec": spec}, nodes=1)
    assert len(weight.notes) == 9 and weight.notes[-1] == "and 12 more"


def weighted() -> readiness.Report:
    def w(cpu: int, memory: int, replicas: int) -> readiness.Weight:
        return readiness.Weight(cpu_millis=cpu, memory_bytes=memory, replicas=replicas)

    return readiness.build(
        [
            workload("Deployment", "web", WEB, TOOL),
            workload("Deployment", "one", LEGACY),
            workload("Deployment", "two", LEGACY, WEB),
            workload("DaemonSet", "agent", ARM32, namespace="edge"),
            workload("Job", "gone", "registry.example/shop/gone:1"),
            workload("Pod", "tool", TOOL, namespace="ops"),
        ],
        NODES,
        ANSWERS,
        weights={
            ("shop", "Deployment", "web"): w(500, 256 * MI, 3),
            ("shop", "Deployment", "one"): w(100, 64 * MI, 1),
            ("shop", "Deployment", "two"): w(200, 128 * MI, 2),
            ("edge", "DaemonSet", "agent"): w(1000, 32 * MI, 5),
            ("shop", "Job", "gone"): w(250, 0, 1),
            # ops/Pod/tool has no weight: it holds nothing.
        },
    )


def test_totals_by_readiness_overall_and_per_namespace() -> None:
    report = weighted()
    ready, blocked, unknown = (readiness.Readiness(s) for s in ("ready", "blocked", "unknown"))
    assert report.totals(ready) == readiness.Totals(2, 3, 1500, 768 * MI)
    assert report.totals(blocked) == readiness.Totals(3, 8, 100 + 400 + 5000, (64 + 256 + 160) * MI)
    assert report.totals(unknown) == readiness.Totals(1, 1, 250, 0)
    assert report.totals(blocked, "shop") == readiness.Totals(2, 3, 500, 320 * MI)
    assert report.totals(ready, "ops") == readiness.Totals(1, 0, 0, 0)
    data = report.to_json()["weights"]
    assert data["overall"]["blocked"] == {
        "workloads": 3,
        "replicas": 8,
        "cpu": 5.5,
        "memory": 480 * MI,
    }
    assert [n["namespace"] for n in data["namespaces"]] == ["edge", "ops", "shop"]
    assert data["namespaces"][2]["unknown"] == {
        "workloads": 1,
        "replicas": 1,
        "cpu": 0.25,
        "memory": 0,
    }


def test_blockers_rank_by_the_requests_they_hold_back() -> None:
    report = weighted()
    # quay.example/iot blocks one workload holding 5 CPU: ahead of shop's two holding 0.5.
    assert [(g.registry, g.owner, g.held) for g in report.blockers] == [
        ("quay.example", "iot", readiness.Totals(1, 5, 5000, 160 * MI)),
        ("registry.example", "shop", readiness.Totals(2, 3, 500, 320 * MI)),
    ]
    json = report.to_json()
    assert json["blockers"][1]["heldBack"] == {
        "workloads": 2,
        "replicas": 3,
        "cpu": 0.5,
        "memory": 320 * MI,
    }
    rows = {w["name"]: w for w in json["workloads"]}
    assert rows["two"]["weight"] == {
        "replicas": 2,
        "podRequests": {"cpu": 0.2, "memory": 128 * MI},
        "requests": {"cpu": 0.4, "memory": 256 * MI},
    }
    assert rows["tool"]["weight"]["replicas"] == 0


def test_blocking_images_in_a_group_rank_by_what_they_hold_back() -> None:
    small = "registry.example/shop/small:1"
    big = "registry.example/shop/big:1"
    answers = {**ANSWERS, small: ANSWERS[LEGACY], big: ANSWERS[LEGACY]}
    report = readiness.build(
        [workload("Deployment", "a", small), workload("Deployment", "b", big)],
        NODES,
        answers,
        weights={
            ("shop", "Deployment", "a"): readiness.Weight(100, MI, 1),
            ("shop", "Deployment", "b"): readiness.Weight(100, MI, 4),
        },
    )
    (group,) = report.blockers
    assert [i.image for i in group.images] == [big, small]
    assert group.held == readiness.Totals(2, 5, 500, 5 * MI)


@pytest.mark.parametrize(
    ("millis", "text"), [(0, "0"), (1, "0.001"), (250, "0.25"), (1500, "1.5"), (2000, "2")]
)
def test_cpu_reads_as_exact_cores(millis: int, text: str) -> None:
    assert readiness.cpu(millis) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0"),
        (512, "512"),
        (1024, "1Ki"),
        (256 * MI, "256Mi"),
        (3 * 2**29, "1.5Gi"),
        (2**60, "1Ei"),
    ],
)
def test_memory_reads_in_binary_units(size: int, text: str) -> None:
    assert readiness.memory(size) == text


def test_the_table_weighs_rows_totals_and_blockers() -> None:
    lines = readiness.table(weighted()).splitlines()
    two = next(line for line in lines if line.startswith("shop/Deployment/two "))
    assert two.split()[:5] == ["shop/Deployment/two", "blocked", "2", "0.4", "256Mi"]
    assert (
        "arm64: 1.5 of 7.25 CPU, 768Mi of 1.2Gi memory and 3 of 12 replicas requested could move"
    ) in lines
    start = lines.index(
        "Requests by arm64 readiness (CPU in cores; replicas times each pod's requests):"
    )
    assert [line.split() for line in lines[start + 1 : start + 10]] == [
        ["NAMESPACE", "ARM64", "WORKLOADS", "REPLICAS", "CPU", "MEMORY"],
        ["(all)", "ready", "2", "3", "1.5", "768Mi"],
        ["(all)", "blocked", "3", "8", "5.5", "480Mi"],
        ["(all)", "unknown", "1", "1", "0.25", "0"],
        ["edge", "blocked", "1", "5", "5", "160Mi"],
        ["ops", "ready", "1", "0", "0", "0"],
        ["shop", "ready", "1", "3", "1.5", "768Mi"],
        ["shop", "blocked", "2", "3", "0.5", "320Mi"],
        ["shop", "unknown", "1", "1", "0.25", "0"],
    ]
    blockers = lines[
        lines.index("Blocking images, by registry and owner, most requests held back first:") :
    ]
    assert blockers[1:4] == [
        "  quay.example iot: 1 workload, 5 replicas, 5 CPU, 160Mi memory",
        f"    {ARM32} (linux/arm/v7) holds back 5 CPU, 160Mi: blocks edge/DaemonSet/agent",
        "  registry.example shop: 2 workloads, 3 replicas, 0.5 CPU, 320Mi memory",
    ]


def test_weight_notes_show_under_the_row() -> None:
    report = readiness.build(
        [workload("Deployment", "web", WEB)],
        NODES,
        ANSWERS,
        weights={("shop", "Deployment", "web"): readiness.Weight(0, 0, 1, ("cpu: bad\x1b[2J",))},
    )
    lines = readiness.table(report).splitlines()
    assert lines[3] == "    note: cpu: bad\\x1b[2J"
    assert report.to_json()["workloads"][0]["weight"]["notes"] == ["cpu: bad\x1b[2J"]
