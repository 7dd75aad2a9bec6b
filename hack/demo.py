"""`make demo`: a local multi-arch cluster with one real node, archwarden's own image built and
installed by its Helm chart, sample workloads denied and placed. `--dev` runs archwarden on the
host instead (`archwarden run --dev`, for development). Everything it starts is stopped at the
end (the cluster only if the demo started it); pass --keep to leave it all running."""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cluster.cluster import LocalCluster  # noqa: E402
from tests.support.archwarden import ArchwardenProcess  # noqa: E402
from tests.support.images import PlainRegistry, RegistryTarget, Seeder  # noqa: E402
from tests.support.registry import start_registry  # noqa: E402

SAMPLES = {
    "demo/web:1.0": ["linux/amd64", "linux/arm64", "linux/arm/v7"],
    "demo/legacy:2.3": ["linux/amd64"],
    "demo/edge:0.9": ["linux/arm64"],
    "demo/mainframe:5": ["linux/s390x", "linux/ppc64le"],
    "demo/win:ltsc2022": ["windows/amd64:10.0.20348.1129"],
}
NAMESPACE = "archwarden-demo"
RELEASE_NAMESPACE = "archwarden"


def banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def deployment(name: str, image: str, replicas: int, extra: dict[str, object]) -> str:
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": name, "image": image}], **extra},
                },
            },
        }
    )


def story(cluster: LocalCluster, host: str, metrics: Callable[[], str]) -> None:
    """Deny, place, report: the same for the installed chart and for `run --dev`."""
    cluster.create_namespace(NAMESPACE)
    # The webhook configurations exist; wait until the API server really calls archwarden.
    probe = deployment(
        "probe", f"{host}/demo/edge:0.9", 1, {"nodeSelector": {"kubernetes.io/arch": "amd64"}}
    )
    cluster.wait_for(
        lambda: (
            "archwarden"
            in cluster.kubectl(
                "apply", "--dry-run=server", "-f", "-", input=probe, check=False
            ).stderr
        ),
        timeout=60,
        message="the API server calling archwarden",
    )

    banner("an amd64-only Deployment applied to the arm64 pool: denied at kubectl apply")
    arm_nodes = cluster.nodes_with({"kubernetes.io/arch": "arm64", "type": "kwok"})
    term = {"key": "kubernetes.io/hostname", "operator": "In", "values": arm_nodes}
    required = {"nodeSelectorTerms": [{"matchExpressions": [term]}]}
    pool = {
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}
    }
    legacy = deployment("legacy", f"{host}/demo/legacy:2.3", 2, pool)
    print("$ kubectl apply -f legacy.yaml", flush=True)
    print(cluster.kubectl("apply", "-f", "-", input=legacy, check=False).stderr.strip())

    banner("a multi-arch Deployment: pods get node affinity and run only where they can")
    web = deployment("web", f"{host}/demo/web:1.0", 4, {})
    print("$ kubectl apply -f web.yaml", flush=True)
    print(cluster.kubectl("apply", "-f", "-", input=web).stdout.strip())
    pods = cluster.wait_pods_running(NAMESPACE, 4, selector="app=web")
    print(f"{'POD':24} {'NODE':16} {'STATUS':8} PLATFORMS")
    for pod in pods:
        annotations = pod["metadata"].get("annotations", {})
        print(
            f"{pod['metadata']['name']:24} {pod['spec']['nodeName']:16} "
            f"{pod['status']['phase']:8} {annotations.get('archwarden.io/platforms', '')}"
        )
    print("$ kubectl get pod -l app=web -o jsonpath='{.items[0].spec.affinity}'")
    print(json.dumps(pods[0]["spec"].get("affinity", {}), indent=2))

    banner("Events")
    time.sleep(2)
    listed = cluster.kubectl("get", "events", "-n", NAMESPACE, "-o", "json").stdout
    for event in json.loads(listed or '{"items": []}')["items"]:
        if (event.get("source") or {}).get("component") != "archwarden":
            continue
        obj = event["involvedObject"]
        name = f"{obj['kind']}/{obj['name']}"
        print(f"{event['type']:8} {event['reason']:22} {name}: {event['message']}")
    banner("metrics excerpt")
    for line in metrics().splitlines():
        if line.startswith(
            (
                "archwarden_admission_requests_total{",
                "archwarden_nodes{",
                "archwarden_registry_requests_total{",
                "archwarden_image_cache_lookups_total{",
            )
        ):
            print(line)


def seed(target: RegistryTarget) -> list[str]:
    with Seeder(target) as seeder:
        for ref, platforms in SAMPLES.items():
            repo, tag = ref.split(":")
            if len(platforms) == 1:
                fmt = "docker" if platforms[0].startswith("windows") else "oci"
                seeder.push_image(repo, tag, platforms[0], fmt=fmt)
            else:
                seeder.push_multiarch(repo, tag, platforms, attestations=True)
    refs = [f"{target.host}/{ref}" for ref in SAMPLES]
    binary = str(ROOT / ".venv" / "bin" / "archwarden")
    print(f"$ archwarden inspect {target.host}/demo/...", flush=True)
    subprocess.run([binary, "inspect", "--insecure-registry", target.host, *refs], check=True)
    return refs


def installed(cluster: LocalCluster, keep: bool) -> None:
    """The product as users install it: its image, its chart, the real node."""
    host = cluster.registry
    image = f"{host}/archwarden/archwarden:demo"
    banner(f"make image: archwarden's image, built without a Docker daemon, pushed to {host}")
    subprocess.run(
        ["make", "--no-print-directory", "image", f"IMAGE={image}", "PLATFORMS=linux/amd64"],
        cwd=ROOT,
        check=True,
    )
    banner(f"sample images in the cluster's registry ({host})")
    seed(PlainRegistry(host))
    banner(
        "helm install charts/archwarden: 2 replicas on the real node, the chart's ServiceAccount"
    )
    values = {
        "image": {"repository": image.rpartition(":")[0], "tag": "demo"},
        "nodeSelector": {"kubernetes.io/os": "linux", LocalCluster.REAL_NODE_TAINT: "true"},
        "tolerations": [
            {"key": LocalCluster.REAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}
        ],
        "config": {"mode": "enforce", "registries": {host: {"insecure": True}}},
        # Only the API server's webhook client certificate (hack/cluster/up.sh) gets in.
        "webhook": {
            "clientAuth": {
                "enabled": True,
                "caBundle": base64.b64encode(cluster.ca_file.read_bytes()).decode(),
                "names": [LocalCluster.WEBHOOK_CLIENT_NAME],
            }
        },
    }
    values_file = ROOT / ".demo" / "values.json"
    values_file.write_text(json.dumps(values))
    helm = [str(cluster.helm_path), "--namespace", RELEASE_NAMESPACE]
    print(
        f"$ helm install archwarden charts/archwarden -n {RELEASE_NAMESPACE} "
        "--create-namespace -f values.json --wait",
        flush=True,
    )
    subprocess.run(
        [
            *helm,
            "install",
            "archwarden",
            str(ROOT / "charts" / "archwarden"),
            "--create-namespace",
            "--values",
            str(values_file),
            "--wait",
            "--timeout",
            "240s",
        ],
        env=cluster.env(),
        check=True,
    )
    print(cluster.kubectl("get", "pods", "-n", RELEASE_NAMESPACE, "-o", "wide").stdout)
    try:
        story(
            cluster,
            host,
            lambda: (
                cluster.kubectl(
                    "get",
                    "--raw",
                    f"/api/v1/namespaces/{RELEASE_NAMESPACE}/services/http:archwarden:metrics/proxy/metrics",
                ).stdout
            ),
        )
        if keep:
            return
    finally:
        if not keep:
            cluster.delete_namespace(NAMESPACE)
            subprocess.run(
                [*helm, "uninstall", "archwarden", "--wait"], env=cluster.env(), check=False
            )
            cluster.kubectl("delete", "namespace", RELEASE_NAMESPACE, "--wait=false", check=False)


def dev(cluster: LocalCluster, workdir: Path, keep: bool) -> None:
    """For development: `archwarden run --dev` on the host, a registry on 127.0.0.1."""
    banner("a local registry (Debian's distribution 2.8) with sample images")
    server = start_registry(workdir / "registry", "plain")
    archwarden: ArchwardenProcess | None = None
    try:
        seed(server)
        banner("archwarden run --dev (webhooks registered with the cluster's API server)")
        archwarden = ArchwardenProcess(
            workdir / "archwarden",
            cluster.kubeconfig,
            {
                "mode": "enforce",
                "registries": {server.host: {"insecure": True}},
                "webhook": {
                    "clientCAFile": str(cluster.ca_file),
                    "clientNames": [LocalCluster.WEBHOOK_CLIENT_NAME],
                },
            },
        ).start()
        print(f"archwarden ready; metrics at {archwarden.metrics_url}/metrics")
        story(cluster, server.host, archwarden.metrics)
    finally:
        if not keep:
            cluster.delete_namespace(NAMESPACE)
            if archwarden is not None:
                archwarden.stop()
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave everything running")
    parser.add_argument(
        "--dev", action="store_true", help="run archwarden on the host (`run --dev`) instead"
    )
    args = parser.parse_args()
    workdir = ROOT / ".demo"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()

    cluster = LocalCluster()
    started_cluster = not cluster.is_healthy()
    if started_cluster:
        banner("building (first run: from the Go module proxy) and starting the local cluster")
        cluster.up()
    print(cluster.kubectl("get", "nodes", "-L", "kubernetes.io/arch,kubernetes.io/os").stdout)
    try:
        if args.dev:
            dev(cluster, workdir, args.keep)
        else:
            installed(cluster, args.keep)
    finally:
        if args.keep:
            print(f"\nleft running; KUBECONFIG={cluster.kubeconfig}; stop with make cluster-down")
        elif started_cluster:
            cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
