"""Client authentication on the webhook port: real TLS on 127.0.0.1, no cluster.

With ``client_ca_file`` the server requires a client certificate signed by that CA (the TLS
handshake fails otherwise), optionally with a CN or DNS SAN from ``client_names``; the CA file
is re-read like the serving certificate. The function behind the server records what the
webhook layer tells the admission layer: whether the caller was authenticated.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from archwarden import metrics, webhook_server
from tests.support.pki import CertificateAuthority, issue_cert, make_ca, write_tls_files
from tests.support.registry import free_port

REVIEW = json.dumps(
    {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "u-1", "operation": "CREATE", "object": {"kind": "Pod"}},
    }
).encode()


class Client:
    """A key pair on disk for httpx (which takes client certificates only through a context)."""

    def __init__(self, directory: Path, ca: CertificateAuthority, name: str, sans: Sequence[str]):
        leaf = issue_cert(ca, common_name=name, dns_names=sans, ip_addresses=(), client=True)
        self.cert_file = directory / f"{name}.crt"
        self.key_file = directory / f"{name}.key"
        self.cert_file.write_bytes(leaf.cert_pem)
        self.key_file.touch(mode=0o600)
        self.key_file.write_bytes(leaf.key_pem)


class Served:
    def __init__(self, url: str, server_ca: Path, meters: metrics.Metrics) -> None:
        self.url = url
        self.server_ca = server_ca
        self.meters = meters
        self.seen: list[bool] = []  # authenticated, per review that reached the function

    async def post(self, client: Client | None = None) -> httpx.Response:
        context = ssl.create_default_context(cafile=str(self.server_ca))
        if client is not None:
            context.load_cert_chain(str(client.cert_file), str(client.key_file))
        async with httpx.AsyncClient(verify=context, timeout=10) as http:
            return await http.post(
                self.url + "/validate-pods",
                content=REVIEW,
                headers={"Content-Type": "application/json"},
            )

    async def refused_handshake(self, client: Client | None = None) -> None:
        # TLS 1.3 clients finish their side before the server checks the certificate, so the
        # refusal shows as a connect, read or protocol error: never as an HTTP answer.
        with pytest.raises(httpx.TransportError):
            await self.post(client)

    def refused(self, reason: str) -> float:
        value = self.meters.registry.get_sample_value(
            "archwarden_admission_refused_total", {"reason": reason}
        )
        return value or 0.0


Start = Callable[..., Any]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    tls = write_tls_files(tmp_path / "serving")
    generators: list[Any] = []

    async def started(**kwargs: Any) -> Served:
        meters = metrics.Metrics()
        served: Served

        async def decide(data: Any, **kw: Any) -> dict[str, Any]:
            served.seen.append(webhook_server.authenticated(kw.get("sslpeer")))
            uid = data["request"]["uid"]
            return {"response": {"uid": uid, "allowed": True}}

        server = webhook_server.WebhookServer(
            meters=meters,
            addr="127.0.0.1",
            port=free_port(),
            host="127.0.0.1",
            certfile=str(tls.cert_file),
            pkeyfile=str(tls.key_file),
            cafile=str(tls.ca_file),
            **kwargs,
        )
        configs = server(decide)
        generators.append(configs)
        config = await configs.__anext__()
        served = Served(config["url"].rstrip("/"), tls.ca_file, meters)
        served.configs = configs  # type: ignore[attr-defined]
        return served

    try:
        yield started
    finally:
        for configs in generators:
            await configs.aclose()


@pytest.fixture
def api_ca(tmp_path: Path) -> tuple[CertificateAuthority, Path]:
    ca = make_ca("api server client CA")
    path = tmp_path / "client-ca.crt"
    path.write_bytes(ca.pem)
    return ca, path


async def test_without_a_client_ca_anyone_is_served_unauthenticated(start: Start) -> None:
    served = await start()
    answer = await served.post()
    assert answer.status_code == 200 and served.seen == [False]


async def test_a_client_without_a_certificate_fails_the_handshake(
    start: Start, api_ca: tuple[CertificateAuthority, Path]
) -> None:
    served = await start(client_ca_file=str(api_ca[1]))
    await served.refused_handshake()
    assert served.seen == []


async def test_a_certificate_from_another_ca_fails_the_handshake(
    start: Start, api_ca: tuple[CertificateAuthority, Path], tmp_path: Path
) -> None:
    served = await start(client_ca_file=str(api_ca[1]))
    stranger = Client(tmp_path, make_ca("other CA"), "apiserver", ["apiserver"])
    await served.refused_handshake(stranger)
    assert served.seen == []


async def test_a_certificate_from_the_ca_is_reviewed_and_marked_authenticated(
    start: Start, api_ca: tuple[CertificateAuthority, Path], tmp_path: Path
) -> None:
    served = await start(client_ca_file=str(api_ca[1]))
    good = Client(tmp_path, api_ca[0], "anything", ["anything.example"])
    answer = await served.post(good)
    assert answer.status_code == 200, answer.text
    assert answer.json()["response"]["allowed"] is True
    assert served.seen == [True]


async def test_client_names_match_the_common_name_or_a_dns_san(
    start: Start, api_ca: tuple[CertificateAuthority, Path], tmp_path: Path
) -> None:
    ca, path = api_ca
    names = ["archwarden.archwarden.svc", "kube-apiserver"]
    served = await start(client_ca_file=str(path), client_names=names)
    by_cn = Client(tmp_path, ca, "kube-apiserver", ["other.example"])
    by_san = Client(tmp_path, ca, "someone", ["archwarden.archwarden.svc"])
    neither = Client(tmp_path, ca, "kubelet", ["node-1"])
    assert (await served.post(by_cn)).status_code == 200
    assert (await served.post(by_san)).status_code == 200
    refused = await served.post(neither)
    assert refused.status_code == 403
    assert served.seen == [True, True]
    assert served.refused("client_name") == 1


async def test_client_names_without_a_ca_are_a_mistake() -> None:
    with pytest.raises(ValueError, match="client_ca_file"):
        webhook_server.WebhookServer(meters=metrics.Metrics(), client_names=["apiserver"])


async def test_a_changed_ca_file_is_served_from_then_on(
    start: Start, api_ca: tuple[CertificateAuthority, Path], tmp_path: Path
) -> None:
    old_ca, path = api_ca
    new_ca = make_ca("rotated client CA")
    old_client = Client(tmp_path, old_ca, "old", ["old"])
    new_client = Client(tmp_path, new_ca, "new", ["new"])
    served = await start(client_ca_file=str(path), file_check_interval=0.05)
    assert (await served.post(old_client)).status_code == 200
    await served.refused_handshake(new_client)

    path.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot a certificate\n")
    await asyncio.sleep(0.3)  # a broken file is ignored: the old CA keeps being served
    assert (await served.post(old_client)).status_code == 200

    path.write_bytes(new_ca.pem)
    following = asyncio.ensure_future(served.configs.__anext__())  # type: ignore[attr-defined]
    config = await asyncio.wait_for(following, timeout=5)
    assert config["url"].rstrip("/") == served.url
    assert (await served.post(new_client)).status_code == 200
    await served.refused_handshake(old_client)
