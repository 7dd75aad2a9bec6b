"""One warm review in process, without HTTP: what archwarden's own code costs per review.

Run: `.venv/bin/python bench/review.py`. Builds the admission core as `archwarden run` does
(a real Resolver over the tests' fake registry, PullSecrets with the ServiceAccount cached, an
Inventory of 6 nodes) and answers the same AdmissionReview again and again through
``handlers.answer_review``, the webhook server's direct route, after decoding it from JSON, and
encodes the answer, as the server does. The baseline, in the same run, is decoding and
encoding that review alone: the part any webhook pays. Two reviews: a one-container pod, and a
Deployment with two containers, an init container, tolerations and required node affinity.
Figures: the best of 8 rounds of 5,000 reviews, by the thread's CPU time (this machine's
speed varies between moments; the best round is the one least disturbed).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.admission import pod, review_template
from tests.operator.test_admission_core import HOST, Registry

from archwarden import admission, handlers, kube, policy, registry, settings

ROUNDS = 8
REVIEWS = 5000


def deployment_review() -> bytes:
    spec = {
        "containers": [
            {"name": "api", "image": f"{HOST}/team/web:1", "ports": [{"containerPort": 80}]},
            {"name": "proxy", "image": f"{HOST}/team/web:1"},
        ],
        "initContainers": [{"name": "init", "image": f"{HOST}/team/web:1"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [
            {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"},
        ],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/arch",
                                    "operator": "In",
                                    "values": ["amd64", "arm64"],
                                }
                            ]
                        }
                    ]
                }
            }
        },
    }
    obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "api"}},
            "template": {"metadata": {"labels": {"app": "api"}}, "spec": spec},
        },
    }
    return review_template(obj)


def runtime() -> handlers.Runtime:
    config = settings.Settings(registries={HOST: registry.RegistrySettings()}, mode="enforce")
    rt = handlers.Runtime(config)
    transport = httpx.MockTransport(Registry().handler)
    client = registry.RegistryClient(config.client_settings(), transport=transport)
    resolver = registry.Resolver(client, config.cache, observer=rt.metrics.observe_lookup)
    secrets = kube.PullSecrets(None)  # type: ignore[arg-type]  # never read: all cached below
    secrets._accounts[("default", "default")] = ()
    for node in policy.nodes_from_platforms(["linux/amd64"] * 3 + ["linux/arm64"] * 3):
        rt.nodes.apply(node.name, node)
    rt.admission = admission.Admission(
        config,
        resolver,
        rt.inventory,
        credentials=secrets.for_pod,
        held_credentials=secrets.held,
        namespace_mode=rt.namespace_modes.get,
        namespace_allows_skip=rt.skip_namespaces.__contains__,
        meters=rt.metrics,
        capacity=rt.provisionable,
    )
    return rt


async def best(step: Callable[[], Awaitable[object]]) -> float:
    """Seconds of thread CPU time per call, the best round of ``ROUNDS``."""
    for _ in range(REVIEWS // 5):
        await step()  # warm: the image resolved, the decision cached, code paths hot
    rounds = []
    for _ in range(ROUNDS):
        start = time.thread_time()
        for _ in range(REVIEWS):
            await step()
        rounds.append((time.thread_time() - start) / REVIEWS)
    return min(rounds)


async def measure(label: str, webhook: str, body: bytes) -> None:
    rt = runtime()

    async def review() -> bytes:
        answer = await handlers.answer_review(rt, webhook, json.loads(body), None)
        assert answer is not None and answer["response"]["allowed"] is True, answer
        return json.dumps(answer).encode()

    async def baseline() -> bytes:
        return json.dumps(json.loads(body)).encode()

    ours, bare = await best(review), await best(baseline)
    print(
        f"{label:<12} {len(body):>6} B   review {ours * 1e6:6.1f} us   JSON alone "
        f"{bare * 1e6:5.1f} us   x{ours / bare:4.1f}   archwarden's own "
        f"{(ours - bare) * 1e6:6.1f} us"
    )


async def main() -> None:
    print("$ " + " ".join(sys.orig_argv))
    await measure("pod", "validate-pods", review_template(pod("web", [f"{HOST}/team/web:1"])))
    await measure("deployment", "validate-deployments", deployment_review())


if __name__ == "__main__":
    asyncio.run(main())
