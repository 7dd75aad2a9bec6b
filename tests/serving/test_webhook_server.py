"""The HTTPS webhook server itself: real TLS requests on 127.0.0.1, no cluster.

The webhook function behind the server is archwarden's admission core (fake registry), so a
big review is not only accepted but decided; reached both ways the server can hand a review on:
through kopf's webhook function and through archwarden's direct route (``handlers``).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from archwarden import handlers, metrics, settings, webhook_server
from tests.operator.test_admission_core import HOST, Registry, deployment, engine
from tests.support.pki import write_tls_files
from tests.support.registry import free_port

MiB = 1024 * 1024


def padded_review(image: str, size: int) -> bytes:
    """An AdmissionReview for a Deployment padded with env vars to about ``size`` bytes."""
    obj = deployment(image)
    container = obj["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": f"PAD_{i}", "value": "x" * 1000} for i in range(size // 1030)]
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "u-1", "operation": "CREATE", "object": obj},
    }
    return json.dumps(review).encode()


class Served:
    def __init__(self, url: str, ca_file: Path, meters: metrics.Metrics) -> None:
        self.url = url
        self.ca_file = ca_file
        self.meters = meters

    async def post(self, path: str, body: bytes, *, chunked: bool = False) -> httpx.Response:
        """``chunked``: sent in 64 KiB pieces without a Content-Length, as a stream."""
        context = ssl.create_default_context(cafile=str(self.ca_file))

        async def pieces() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 65536):
                yield body[start : start + 65536]

        async with httpx.AsyncClient(verify=context, timeout=10) as client:
            return await client.post(
                self.url + path,
                content=pieces() if chunked else body,
                headers={"Content-Type": "application/json"},
            )

    def refused(self, reason: str) -> float:
        value = self.meters.registry.get_sample_value(
            "archwarden_admission_refused_total", {"reason": reason}
        )
        return value or 0.0


@pytest.fixture(params=["kopf", "direct"])
async def served(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    tls = write_tls_files(tmp_path)
    eng = engine(Registry(), failure_policy="closed")

    async def decide(data: Any, **_: Any) -> dict[str, Any]:
        # The shape of kopf's answer, decided by archwarden's admission core.
        request = data["request"]
        outcome = await eng.review(request["object"], operation=request["operation"])
        response: dict[str, Any] = {"uid": request["uid"], "allowed": outcome.allowed}
        if not outcome.allowed:
            response["status"] = {"code": 403, "message": outcome.message}
        return {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": response,
        }

    meters = metrics.Metrics()
    server = webhook_server.WebhookServer(
        meters=meters,
        addr="127.0.0.1",
        port=free_port(),
        host="127.0.0.1",
        certfile=str(tls.cert_file),
        pkeyfile=str(tls.key_file),
        cafile=str(tls.ca_file),
    )
    if request.param == "direct":
        runtime = handlers.Runtime(settings.Settings())
        runtime.admission = eng
        server.direct = handlers.direct_route(runtime)
    async with server:
        configs = server(decide)
        config = await configs.__anext__()
        try:
            yield Served(config["url"].rstrip("/"), tls.ca_file, meters)
        finally:
            await configs.aclose()


async def test_a_review_over_one_mib_is_read_and_decided(served: Served) -> None:
    # amd64-only image, arm64 and ppc64le nodes: 1.2 MiB of env vars must not get it admitted.
    body = padded_review(f"{HOST}/team/legacy:1", int(1.2 * MiB))
    assert len(body) > int(1.2 * MiB)
    answer = await served.post("/validate-deployments", body)
    assert answer.status_code == 200, answer.text
    response = answer.json()["response"]
    assert response["allowed"] is False
    assert "supports linux/amd64 only" in response["status"]["message"]
    assert served.refused("too_large") == 0


async def test_reviews_up_to_the_api_servers_limit_are_accepted(served: Served) -> None:
    body = padded_review(f"{HOST}/team/web:1", 3 * MiB)
    answer = await served.post("/validate-deployments", body)
    assert answer.status_code == 200 and answer.json()["response"]["allowed"] is True


async def test_a_chunked_review_is_read_whole_and_bounded_without_a_declared_length(
    served: Served,
) -> None:
    body = padded_review(f"{HOST}/team/legacy:1", 2 * MiB)
    answer = await served.post("/validate-deployments", body, chunked=True)
    assert answer.status_code == 200 and answer.json()["response"]["allowed"] is False
    too_big = padded_review(f"{HOST}/team/web:1", webhook_server.MAX_REVIEW_BYTES + MiB // 4)
    assert (await served.post("/validate-deployments", too_big, chunked=True)).status_code == 413
    assert served.refused("too_large") == 1


async def test_refused_requests_are_counted(served: Served) -> None:
    too_big = padded_review(f"{HOST}/team/web:1", webhook_server.MAX_REVIEW_BYTES + MiB // 4)
    assert (await served.post("/validate-deployments", too_big)).status_code == 413
    assert served.refused("too_large") == 1
    assert (await served.post("/validate-deployments", b"{not json")).status_code == 400
    assert served.refused("malformed") == 1


async def test_the_direct_route_refuses_unknown_webhooks_and_reviews_without_a_request(
    tmp_path: Path,
) -> None:
    tls = write_tls_files(tmp_path)
    runtime = handlers.Runtime(settings.Settings())
    runtime.admission = engine(Registry())
    meters = metrics.Metrics()
    server = webhook_server.WebhookServer(
        meters=meters,
        addr="127.0.0.1",
        port=free_port(),
        host="127.0.0.1",
        certfile=str(tls.cert_file),
        pkeyfile=str(tls.key_file),
        cafile=str(tls.ca_file),
    )
    server.direct = handlers.direct_route(runtime)

    async def kopf_fn(*_: Any, **__: Any) -> Any:
        raise AssertionError("kopf's machinery is not used when a direct route is set")

    async with server:
        configs = server(kopf_fn)
        config = await configs.__anext__()
        try:
            served = Served(config["url"].rstrip("/"), tls.ca_file, meters)
            review = padded_review(f"{HOST}/team/web:1", 1000)
            assert (await served.post("/validate-secrets", review)).status_code == 404
            assert served.refused("unknown_webhook") == 1
            assert (await served.post("/validate-pods", b'{"kind": "x"}')).status_code == 400
            assert (await served.post("/validate-pods", b"[1]")).status_code == 400
            # 100k nested lists: a one-line 400, not a RecursionError and a 500.
            deep = await served.post("/validate-pods", b"[" * 100_000)
            assert deep.status_code == 400
            assert deep.reason_phrase == "the review is nested too deeply"
            assert served.refused("malformed") == 3
            answer = (await served.post("/validate-deployments", review)).json()
            assert answer["response"] == {"uid": "u-1", "allowed": True}
            # Workload templates are not mutated unless configured: allowed, no patch.
            answer = (await served.post("/mutate-deployments", review)).json()
            assert answer["response"] == {"uid": "u-1", "allowed": True}
        finally:
            await configs.aclose()
