"""`archwarden check` over manifests, images resolved from a real registry."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.registry import faults
from tests.registry.test_inspect_cli import ARCHWARDEN
from tests.support.images import Seeder, unique_repo
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.registry

MANIFESTS = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: legacy, namespace: team}}
spec:
  selector: {{matchLabels: {{app: legacy}}}}
  template:
    metadata: {{labels: {{app: legacy}}}}
    spec:
      containers: [{{name: app, image: "{legacy}"}}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {{name: nightly}}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          initContainers: [{{name: init, image: "{multi}"}}]
          containers: [{{name: app, image: "{multi}"}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: ignored}}
"""


async def run(*args: str) -> tuple[int, str, str]:
    import asyncio

    process = await asyncio.create_subprocess_exec(
        ARCHWARDEN, "check", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
def manifests(
    plain_registry: RegistryServer, seeder_for: Callable[[Any], Seeder], tmp_path: Path
) -> tuple[Path, str, str]:
    seeder = seeder_for(plain_registry)
    legacy_repo, multi_repo = unique_repo("legacy"), unique_repo("multi")
    seeder.push_image(legacy_repo, "2.3", "linux/amd64")
    seeder.push_multiarch(multi_repo, "1", ["linux/amd64", "linux/arm64"])
    legacy = f"{plain_registry.host}/{legacy_repo}:2.3"
    multi = f"{plain_registry.host}/{multi_repo}:1"
    path = tmp_path / "app.yaml"
    path.write_text(MANIFESTS.format(legacy=legacy, multi=multi))
    return path, legacy, multi


async def test_check_denies_what_the_webhook_would_deny(
    plain_registry: RegistryServer, manifests: tuple[Path, str, str]
) -> None:
    path, legacy, _ = manifests
    code, out, err = await run(
        "-f",
        str(path),
        "--platforms",
        "linux/arm64,linux/arm64,linux/ppc64le",
        "--insecure-registry",
        plain_registry.host,
    )
    assert (code, err) == (1, "")
    assert out.splitlines() == [
        f"DENY  team/Deployment/legacy: image {legacy} supports linux/amd64 only; the nodes this "
        "pod can use are linux/arm64 (2), linux/ppc64le (1); publish a multi-arch image or "
        "select amd64 nodes",
        "OK    CronJob/nightly",
    ]


async def test_check_passes_on_a_compatible_pool_with_json(
    plain_registry: RegistryServer, manifests: tuple[Path, str, str]
) -> None:
    path, _, _ = manifests
    code, out, err = await run(
        "-f",
        str(path),
        "--platforms",
        "linux/amd64,linux/arm64",
        "--json",
        "--insecure-registry",
        plain_registry.host,
    )
    assert (code, err) == (0, "")
    rows = json.loads(out)
    assert [(r["kind"], r["verdict"], r["platforms"]) for r in rows] == [
        ("Deployment", "ok", ["linux/amd64"]),
        ("CronJob", "ok", ["linux/amd64", "linux/arm64"]),
    ]


async def test_check_counts_platforms_marked_provisionable(
    plain_registry: RegistryServer, manifests: tuple[Path, str, str]
) -> None:
    path, _, _ = manifests
    common = ["-f", str(path), "--insecure-registry", plain_registry.host]
    # amd64 nodes do not exist, but an autoscaler can add them: the Deployment is admitted.
    code, out, err = await run(*common, "--platforms", "linux/arm64, +linux/amd64")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "OK    team/Deployment/legacy: no node can run it now; nodeGroup linux-amd64 can "
        "provision linux/amd64",
        "OK    CronJob/nightly",
    ]
    code, out, _ = await run(*common, "--platforms", "linux/arm64,+linux/s390x", "--json")
    assert code == 1
    rows = json.loads(out)
    assert rows[0]["verdict"] == "deny"
    assert "nodeGroup linux-s390x can provision linux/s390x" in rows[0]["message"]
    assert rows[1]["provisionable"] == []
    code, _, err = await run(*common, "--platforms", "linux/arm64,+linux/")
    assert code == 2 and err.startswith("archwarden: error: --platforms: ")


async def test_check_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: Deployment\nmetadata: {name: x}\nspec: {template: {spec: []}}\n")
    code, out, err = await run("-f", str(broken), "--platforms", "linux/amd64")
    assert code == 1 and out == ""
    assert err == (
        f"archwarden: error: {broken}: Deployment x: spec.template.spec: expected an object, "
        "got a list\n"
    )
    code, _, err = await run("-f", str(tmp_path / "absent.yaml"), "--platforms", "linux/amd64")
    assert code == 1 and err.startswith("archwarden: error: ") and "Traceback" not in err
    code, _, err = await run("-f", str(broken), "--platforms", "linux/")
    assert code == 2 and err.startswith("archwarden: error: --platforms: ")


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("linux", "an os without an architecture"),
        ("linux /arm", "'linux ' is not an os"),
        ("linux/&arm", "'&arm' is not an architecture or variant"),
        ("+windows", "an os without an architecture"),
    ],
)
async def test_check_refuses_platforms_containerd_would_not_parse(
    tmp_path: Path, entry: str, reason: str
) -> None:
    pod = tmp_path / "pod.yaml"
    pod.write_text("kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: x}]}\n")
    code, out, err = await run("-f", str(pod), "--platforms", f"linux/amd64,{entry}")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and reason in err and repr(entry.lstrip("+")) in err


@pytest.mark.parametrize(
    "content", ['{"auths": {"x": {"auth": "%%%"}}', '{"auths": {"x.example": {"auth": "%%%"}}}']
)
async def test_check_with_a_broken_docker_config_prints_one_line(
    tmp_path: Path, content: str
) -> None:
    config = tmp_path / "config.json"
    config.write_text(content)
    app = tmp_path / "app.yaml"
    app.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n")
    code, _, stderr = await run(
        "-f", str(app), "--platforms", "linux/amd64", "--docker-config", str(config)
    )
    assert code == 2
    assert "Traceback" not in stderr and "%%%" not in stderr
    assert len(stderr.splitlines()) == 1
    assert stderr.startswith(f"archwarden: error: {config}: ")


async def test_check_with_a_huge_docker_config_prints_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    password = "hunter2" * 150_000  # a 1 MiB config: four times limits.pullSecretBytes
    config.write_text(json.dumps({"auths": {"r.example": {"username": "u", "password": password}}}))
    app = tmp_path / "app.yaml"
    app.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n")
    code, _, stderr = await run(
        "-f", str(app), "--platforms", "linux/amd64", "--docker-config", str(config)
    )
    assert code == 2
    assert stderr == f"archwarden: error: {config}: docker config is larger than 262144 bytes\n"


async def test_check_with_a_missing_docker_config_prints_one_line(tmp_path: Path) -> None:
    app = tmp_path / "app.yaml"
    app.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n")
    code, _, stderr = await run(
        "-f", str(app), "--platforms", "linux/amd64", "--docker-config", str(tmp_path / "none")
    )
    assert code == 2
    assert stderr == (
        f"archwarden: error: cannot read docker config {tmp_path / 'none'}: "
        "No such file or directory\n"
    )


async def test_check_honours_the_32_bit_arm_fallback_settings(
    plain_registry: RegistryServer, seeder_for: Callable[[Any], Seeder], tmp_path: Path
) -> None:
    repo = unique_repo("armhf")
    seeder_for(plain_registry).push_image(repo, "1", "linux/arm/v7")
    image = f"{plain_registry.host}/{repo}:1"
    path = tmp_path / "pod.yaml"
    path.write_text(
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\n"
        f'spec: {{containers: [{{name: app, image: "{image}"}}]}}\n'
    )
    common = ["-f", str(path), "--platforms", "linux/arm64", "--insecure-registry"]
    code, out, _ = await run(*common, plain_registry.host)
    assert code == 1
    assert out.strip() == (
        f"DENY  Pod/p: image {image} supports linux/arm/v7 only; the node this pod can use is "
        "linux/arm64 (1); arm64 nodes do not run linux/arm/v7 here: set "
        "platforms.arm64RunsArm32 or label nodes archwarden.io/runs-arm32=true; publish a "
        "multi-arch image or select arm nodes"
    )
    code, out, _ = await run(*common, plain_registry.host, "--arm64-runs-arm32")
    assert (code, out.strip()) == (0, "OK    Pod/p")


async def test_check_timeout_bounds_each_request_whole(tmp_path: Path) -> None:
    async with faults.trickle_server(interval=1.0, lasting=40.0) as host:
        path = tmp_path / "pod.yaml"
        path.write_text(
            f"apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\n"
            f'spec: {{containers: [{{name: app, image: "{host}/team/web:1"}}]}}\n'
        )
        started = asyncio.get_running_loop().time()
        code, out, err = await run(
            "-f",
            str(path),
            "--platforms",
            "linux/amd64",
            "--timeout",
            "2",
            "--insecure-registry",
            host,
        )
        elapsed = asyncio.get_running_loop().time() - started
    assert (code, err) == (1, "")
    assert out.strip() == (
        f"DENY  Pod/p: could not inspect image {host}/team/web:1: registry {host}: "
        "no complete answer within 2s: team/web:1 (failure policy closed)"
    )
    assert elapsed < 8.0


# In the shape of flannel's kube-flannel.yml before 0.12 (written here, not copied): one
# DaemonSet per architecture, each pinned with the beta labels every kubelet still sets.
FLANNEL_LIKE = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: kube-flannel-ds-{arch}, namespace: kube-system}}
spec:
  selector: {{matchLabels: {{app: flannel}}}}
  template:
    metadata: {{labels: {{app: flannel}}}}
    spec:
      nodeSelector: {{beta.kubernetes.io/os: linux, beta.kubernetes.io/arch: {arch}}}
      tolerations: [{{operator: Exists, effect: NoSchedule}}]
      containers: [{{name: kube-flannel, image: "{image}"}}]
"""


async def test_check_judges_daemonsets_pinned_with_the_beta_labels(
    plain_registry: RegistryServer, manifests: tuple[Path, str, str], tmp_path: Path
) -> None:
    _, legacy, multi = manifests
    path = tmp_path / "flannel.yaml"
    path.write_text(
        "---".join(
            FLANNEL_LIKE.format(arch=arch, image=image)
            for arch, image in (("amd64", legacy), ("arm64", legacy), ("ppc64le", multi))
        )
    )
    code, out, err = await run(
        "-f",
        str(path),
        "--platforms",
        "linux/amd64,linux/arm64,linux/ppc64le",
        "--json",
        "--insecure-registry",
        plain_registry.host,
    )
    assert (code, err) == (1, "")
    rows = json.loads(out)
    assert [(r["name"], r["verdict"], r["platforms"]) for r in rows] == [
        ("kube-flannel-ds-amd64", "ok", ["linux/amd64"]),
        ("kube-flannel-ds-arm64", "deny", ["linux/amd64"]),
        ("kube-flannel-ds-ppc64le", "deny", ["linux/amd64", "linux/arm64"]),
    ]
    assert rows[1]["message"].startswith(
        f"image {legacy} supports linux/amd64 only; the node this pod can use is linux/arm64 (1)"
    )
    assert all(r["assumed"] == [] for r in rows)


async def test_check_unwraps_every_list_kind_kubectl_applies(
    plain_registry: RegistryServer, manifests: tuple[Path, str, str], tmp_path: Path
) -> None:
    _, legacy, _ = manifests
    containers = [{"name": "app", "image": legacy}]
    rc = {
        "metadata": {"name": "old-web"},
        "spec": {"selector": {"app": "w"}, "template": {"spec": {"containers": containers}}},
    }
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}
    # A typed list's items may leave their kind off, as the API server serves them.
    rc_list = {"apiVersion": "v1", "kind": "ReplicationControllerList", "items": [rc]}
    listed = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [rc_list, {**pod, "spec": {"containers": containers}}],
    }
    path = tmp_path / "lists.yaml"
    path.write_text(f"{json.dumps(listed)}\n---\n{json.dumps(rc_list)}\n")
    common = ["--platforms", "linux/arm64", "--insecure-registry", plain_registry.host]
    code, out, err = await run("-f", str(path), *common)
    assert (code, err) == (1, "")
    assert [line.split(":")[0] for line in out.splitlines()] == [
        "DENY  ReplicationController/old-web",
        "DENY  Pod/p",
        "DENY  ReplicationController/old-web",
    ]
    deep = tmp_path / "deep.yaml"
    nested = "{kind: Pod, metadata: {name: p}, spec: {containers: [{name: a, image: x}]}}"
    for _ in range(5):
        nested = f"{{apiVersion: v1, kind: List, items: [{nested}]}}"
    deep.write_text(nested + "\n")
    code, out, err = await run("-f", str(deep), *common)
    assert (code, out) == (1, "")
    assert err == f"archwarden: error: {deep}: document 1: lists nested deeper than 4\n"


async def test_check_assumes_constraints_synthetic_nodes_cannot_model(
    plain_registry: RegistryServer,
    seeder_for: Callable[[Any], Seeder],
    manifests: tuple[Path, str, str],
    tmp_path: Path,
) -> None:
    _, legacy, multi = manifests
    repo = unique_repo("armhf")
    seeder_for(plain_registry).push_image(repo, "1", "linux/arm/v7")
    armhf = f"{plain_registry.host}/{repo}:1"
    path = tmp_path / "app.yaml"
    path.write_text(
        f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: db}}
spec:
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      nodeSelector: {{disktype: ssd}}
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions:
              - {{key: node-role.kubernetes.io/worker, operator: Exists}}
              - {{key: node-role.kubernetes.io/control-plane, operator: DoesNotExist}}
      containers: [{{name: db, image: "{armhf}"}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: pinned}}
spec:
  nodeName: worker-7
  nodeSelector: {{kubernetes.io/arch: arm64}}
  containers: [{{name: app, image: "{legacy}"}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: pinned-multi}}
spec:
  nodeName: worker-7
  nodeSelector: {{kubernetes.io/arch: arm64}}
  containers: [{{name: app, image: "{multi}"}}]
"""
    )
    common = ["-f", str(path), "--insecure-registry", plain_registry.host]
    code, out, err = await run(*common, "--platforms", "linux/amd64,linux/arm64")
    assert (code, err) == (1, "")
    lines = out.splitlines()
    assert lines[0].startswith(f"DENY  Deployment/db: image {armhf} supports linux/arm/v7 only")
    assert lines[1] == (
        "      assumed satisfiable: nodeSelector disktype=ssd, "
        "node affinity node-role.kubernetes.io/worker Exists"
    )
    # nodeName is assumed, the arch pin is not: judged against arm64 only, amd64 nodes or not.
    assert lines[2] == (
        f"DENY  Pod/pinned: nodeSelector kubernetes.io/arch=arm64 contradicts image {legacy}, "
        "which supports linux/amd64 only; remove the pin or publish an arm64 image"
    )
    assert lines[3:] == [
        "      assumed satisfiable: nodeName worker-7",
        "OK    Pod/pinned-multi",
        "      assumed satisfiable: nodeName worker-7",
    ]
    code, out, _ = await run(*common, "--platforms", "linux/amd64,linux/arm64", "--json")
    assert [(r["name"], r["platforms"]) for r in json.loads(out)] == [
        ("db", ["linux/arm/v7"]),
        ("pinned", ["linux/amd64"]),
        ("pinned-multi", ["linux/amd64", "linux/arm64"]),
    ]


async def test_check_judges_image_volumes_and_mounts_artifacts_anywhere(
    plain_registry: RegistryServer, seeder_for: Callable[[Any], Seeder], tmp_path: Path
) -> None:
    seeder = seeder_for(plain_registry)
    repo = unique_repo("volumes")
    seeder.push_multiarch(repo, "app", ["linux/amd64", "linux/arm64"])
    seeder.push_image(repo, "tools", "linux/amd64")
    seeder.push_artifact(repo, "model", {"weights.bin": b"\x00" * 64})
    app, tools, model = (f"{plain_registry.host}/{repo}:{t}" for t in ("app", "tools", "model"))
    path = tmp_path / "pods.yaml"
    path.write_text(
        "\n---\n".join(
            f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\n"
            f'spec: {{containers: [{{name: app, image: "{app}"}}], '
            f'volumes: [{{name: {name}, image: {{reference: "{ref}"}}}}]}}'
            for name, ref in (("tools", tools), ("model", model))
        )
    )
    code, out, err = await run(
        "-f", str(path), "--platforms", "linux/arm64", "--insecure-registry", plain_registry.host
    )
    assert (code, err) == (1, "")
    assert out.splitlines() == [
        f"DENY  Pod/tools: image {tools} (image volume tools) supports linux/amd64 only; the "
        "node this pod can use is linux/arm64 (1); publish a multi-arch image or select amd64 "
        "nodes",
        "OK    Pod/model",
    ]
