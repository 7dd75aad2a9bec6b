"""The real node: a kubelet with containerd that runs containers, pulls only from the cluster's
registry, and leaves the machine as it found it."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.cluster import REPO_ROOT, LocalCluster, kube_version
from tests.support.images import PlainRegistry, Seeder, unique_repo
from tests.support.registry import start_registry
from tests.support.token_server import TokenServer

pytestmark = pytest.mark.cluster

NODE = LocalCluster.REAL_NODE
# The kernel tunables the kubelet writes when it may, and the forwarding switch the pod network
# must not need: all machine-wide.
SYSCTLS = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
]
FIXED_PATHS = ["/run/containerd", "/var/lib/kubelet", "/var/lib/cni", "/var/log/containers",
               "/var/log/pods"]  # fmt: skip


def tolerating_pod(name: str, image: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {LocalCluster.REAL_NODE_TAINT: "true"},
            "tolerations": [{"key": LocalCluster.REAL_NODE_TAINT, "operator": "Exists"}],
            "containers": [{"name": "c", "image": image}],
            "terminationGracePeriodSeconds": 1,
            **extra,
        },
    }


def test_the_real_node_is_ready_tainted_and_real(cluster: LocalCluster) -> None:
    node = cluster.get_json("node", NODE)
    assert cluster.node_ready(NODE)
    assert {"key": LocalCluster.REAL_NODE_TAINT, "value": "true", "effect": "NoSchedule"} in (
        node["spec"]["taints"]
    )
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == kube_version()
    assert info["containerRuntimeVersion"].startswith("containerd://2.")
    # Addressed by IP only, so the API server never resolves a name through the machine's DNS.
    assert {"type": "InternalIP", "address": "10.77.0.1"} in node["status"]["addresses"]
    assert "kwok.x-k8s.io/node" not in (node["metadata"].get("annotations") or {})


def test_the_pod_bridge_keeps_its_mac_address_as_ports_come_and_go(cluster: LocalCluster) -> None:
    # A bridge whose address the kernel chose takes the lowest of its ports' addresses: a pod
    # veth added or removed would change it, and pods would talk to the old one (their ARP entry
    # for the host) for half a minute. A port with the lowest possible address must not move it.
    bridge = Path("/sys/class/net/awbr0")
    before = (bridge / "address").read_text().strip()
    assert (bridge / "addr_assign_type").read_text().strip() == "3"  # NET_ADDR_SET: ours
    port = "awmactest0"
    subprocess.run(
        ["ip", "link", "add", port, "address", "00:00:00:00:00:01", "type", "veth",
         "peer", "name", port + "p"],
        check=True,
    )  # fmt: skip
    try:
        subprocess.run(["ip", "link", "set", port, "master", "awbr0"], check=True)
        assert (bridge / "address").read_text().strip() == before
    finally:
        subprocess.run(["ip", "link", "del", port], check=True)
    assert (bridge / "address").read_text().strip() == before


def test_a_pod_runs_there_from_the_cluster_registry(cluster: LocalCluster, namespace: str) -> None:
    pause = f"{cluster.registry}/archwarden/pause:catatonit"
    cluster.kubectl(
        "create", "-n", namespace, "-f", "-", input=json.dumps(tolerating_pod("p", pause))
    )
    cluster.wait_for(
        lambda: cluster.get_json("pod", "p", "-n", namespace)["status"].get("podIP"),
        timeout=60,
        message=lambda: cluster.kubectl("describe", "pod", "p", "-n", namespace).stdout,
    )
    pod = cluster.wait_pods_running(namespace, 1)[0]
    assert pod["spec"]["nodeName"] == NODE
    assert pod["status"]["podIP"].startswith("10.77.")
    # The API server reaches the kubelet (logs go API server -> kubelet on its InternalIP).
    logs = cluster.kubectl("logs", "p", "-n", namespace, check=False)
    assert logs.returncode == 0, logs.stderr


def test_the_kubelet_mounts_image_volumes(cluster: LocalCluster, namespace: str) -> None:
    # What archwarden judges image volumes by: the kubelet pulls them for the node's platform
    # (containerd 2, the ImageVolume feature on by default) and mounts them into the pod.
    repo = f"archwarden-e2e/{unique_repo('volumes')}"
    with Seeder(PlainRegistry(cluster.registry)) as seeder:
        seeder.push_multiarch(repo, "data", ["linux/amd64", "linux/arm64"])
        seeder.push_artifact(repo, "model", {"weights.bin": b"\x00" * 64})
    pause = f"{cluster.registry}/archwarden/pause:catatonit"
    for name, tag in (("image", "data"), ("artifact", "model")):
        body = tolerating_pod(
            name,
            pause,
            volumes=[{"name": "v", "image": {"reference": f"{cluster.registry}/{repo}:{tag}"}}],
        )
        body["metadata"]["labels"] = {"volume": name}
        body["spec"]["containers"][0]["volumeMounts"] = [{"name": "v", "mountPath": "/v"}]
        cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(body))
    (pod,) = cluster.wait_pods_running(namespace, 1, selector="volume=image", timeout=90)
    assert (pod["metadata"]["name"], pod["spec"]["nodeName"]) == ("image", NODE)

    # containerd 2.4 mounts runnable images only (containerd/containerd#11381): an OCI artifact
    # is pulled, then refused for want of an image config, whatever the platform. archwarden
    # judges it as naming no platform; whether the runtime mounts it is the runtime's.
    def refused() -> str | None:
        for event in cluster.get_json("events", "-n", namespace)["items"]:
            if event["involvedObject"]["name"] == "artifact" and event["reason"] == "Failed":
                return str(event["message"])
        return None

    message = cluster.wait_for(refused, timeout=60, message="the artifact's mount to fail")
    assert "failed to mount image volume" in message and "exec format" not in message


def test_the_kubelet_and_archwarden_read_a_node_identity_registry_alike(
    cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    # As on EKS with ecr-credential-provider: a registry that gives anonymous callers nothing,
    # no pull secret anywhere, and the node's kubelet configured with a credential provider
    # plugin (hack/cluster/node.sh: the project's test plugin, for 127.0.0.1:<port>). archwarden
    # is given the very same config and plugin directory.
    providers = cluster.state_dir / "node/credential-providers"
    port = cluster.ports()["NODE_CREDENTIALS_PORT"]
    password = secrets.token_urlsafe(16)
    tokens = TokenServer(username="node", password=password, allow_anonymous=False)
    server = start_registry(
        tmp_path / "registry", "token", port=port, username="node", password=password,
        token_server=tokens,
    )  # fmt: skip
    try:
        (providers / "password").write_text(password)
        repo = unique_repo("nodeid")
        with Seeder(server) as seeder:
            seeder.push_multiarch(repo, "1", ["linux/amd64", "linux/arm64"])
        image = f"{server.host}/{repo}:1"
        before = (
            (providers / "requests.log").read_text()
            if (providers / "requests.log").exists()
            else ""
        )

        cluster.kubectl(
            "create", "-n", namespace, "-f", "-", input=json.dumps(tolerating_pod("private", image))
        )

        def pulled() -> str | None:
            for event in cluster.get_json("events", "-n", namespace)["items"]:
                if event["involvedObject"]["name"] == "private" and event["reason"] in (
                    "Pulled",
                    "Failed",
                ):
                    return f"{event['reason']}: {event['message']}"
            return None

        outcome = cluster.wait_for(pulled, timeout=60, message="the kubelet's pull")
        assert outcome.startswith(f'Pulled: Successfully pulled image "{image}"'), outcome
        assert not cluster.get_json("pod", "private", "-n", namespace)["spec"].get(
            "imagePullSecrets"
        )

        manifest = tmp_path / "app.yaml"
        manifest.write_text(
            f"apiVersion: v1\nkind: Pod\nmetadata: {{name: app}}\n"
            f'spec: {{containers: [{{name: app, image: "{image}"}}]}}\n'
        )
        check = [
            str(REPO_ROOT / ".venv/bin/archwarden"), "check", "-f", str(manifest),
            "--platforms", "linux/arm64", "--insecure-registry", server.host,
            "--insecure-registry", f"127.0.0.1:{tokens.port}",
        ]  # fmt: skip
        without = subprocess.run(check, capture_output=True, text=True, timeout=60, check=False)
        assert "token server refused the credentials (HTTP 401)" in without.stderr + without.stdout
        node = subprocess.run(
            [
                *check,
                "--image-credential-provider-config", str(providers / "config.yaml"),
                "--image-credential-provider-bin-dir", str(providers / "bin"),
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert (node.returncode, node.stdout.strip(), node.stderr) == (0, "OK    Pod/app", "")
        # One plugin, one config, two callers: the kubelet's request and archwarden's alike.
        requests = [
            json.loads(line)
            for line in (providers / "requests.log").read_text()[len(before) :].splitlines()
        ]
        assert len(requests) >= 2
        assert {r["image"] for r in requests} == {f"{server.host}/{repo}"}
    finally:
        server.stop()


def test_no_image_comes_from_outside_the_machine(cluster: LocalCluster, namespace: str) -> None:
    outside = tolerating_pod("outside", "docker.io/library/busybox:1.36")
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(outside))

    def pull_failed() -> str | None:
        status = cluster.get_json("pod", "outside", "-n", namespace)["status"]
        for container in status.get("containerStatuses") or []:
            waiting = container.get("state", {}).get("waiting") or {}
            if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff"):
                return str(waiting.get("message", ""))
        return None

    message = cluster.wait_for(pull_failed, timeout=60, message="the pull to fail")
    # containerd's default host is a closed port on this machine: nothing was resolved or sent.
    assert "127.0.0.1:9" in message


def test_a_second_cluster_leaves_the_real_nodes_bridge_alone(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    # The real node is one per machine. A second up.sh used to start its control plane, fail
    # to add the bridge, and in its clean-up delete the bridge of the cluster that owned it.
    other = tmp_path / "other"
    env = {**os.environ, "ARCHWARDEN_CLUSTER_DIR": str(other)}
    up = subprocess.run(
        [str(REPO_ROOT / "hack/cluster/up.sh")],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert up.returncode != 0
    assert f"belongs to the cluster in {cluster.state_dir}" in up.stderr
    down = subprocess.run(
        [str(REPO_ROOT / "hack/cluster/down.sh")],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert down.returncode == 0, down.stderr
    alias = Path("/sys/class/net/awbr0/ifalias").read_text().strip()
    assert alias == f"archwarden:{cluster.state_dir}"
    assert cluster.node_ready(NODE)


def machine_state() -> dict[str, Any]:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    mounts = Path("/proc/self/mountinfo").read_text()
    cgroups = sorted(str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods"))
    return {
        "sysctls": {k: Path("/proc/sys", k).read_text().strip() for k in SYSCTLS},
        "links": sorted(
            line.split(":")[1].strip().split("@")[0] for line in links.stdout.splitlines()
        ),
        # The node's mounts all live in the cluster's data directory (up.sh's mktemp).
        "mounts": sorted(
            point
            for point in (line.split()[4] for line in mounts.splitlines())
            if "/archwarden-cluster." in point
        ),
        "paths": [p for p in FIXED_PATHS if Path(p).exists()],
        "cgroups": cgroups,
        # Zombies are not running; an orphan waits for PID 1 to reap it.
        "processes": sorted(
            line
            for line in subprocess.run(
                [
                    "pgrep",
                    "-a",
                    "-f",
                    "containerd|kubelet|docker-registry serve|socat TCP-LISTEN:443",
                ],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.splitlines()
            if not line.endswith("<defunct>")
        ),
    }


def test_down_leaves_the_machine_as_it_was_and_up_changes_no_sysctl(cluster: LocalCluster) -> None:
    cluster.down()
    try:
        before = machine_state()
        assert "awbr0" not in before["links"]
        try:
            cluster.up()
            assert cluster.node_ready(NODE)
            running = machine_state()
            # The kubelet runs and believes it set its tunables: the machine's did not change.
            assert running["sysctls"] == before["sysctls"]
            assert "awbr0" in running["links"]
            assert running["mounts"] and running["processes"]
        finally:
            cluster.down()
        assert machine_state() == before
    finally:
        cluster.up()  # the rest of the session uses it
