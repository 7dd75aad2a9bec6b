"""The registry test infrastructure itself, against the real distribution 2.8 binary."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.images import (
    ACCEPT_ALL,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    SCHEMA1_SIGNED,
    Seeder,
    platform_dict,
    schema1_payload_digest,
    sha256_digest,
    unique_repo,
)
from tests.support.registry import CountingProxy, RegistryError, RegistryServer, start_registry
from tests.support.token_server import TokenServer, libtrust_key_id

pytestmark = pytest.mark.registry

MODES = ["plain", "tls", "basic", "token"]
SeederFor = Callable[[Any], Seeder]


@pytest.fixture(params=MODES)
def any_registry(request: pytest.FixtureRequest) -> RegistryServer:
    server: RegistryServer = request.getfixturevalue(f"{request.param}_registry")
    return server


def _jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    def dec(s: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
        return result

    header, claims, _sig = token.split(".")
    return dec(header), dec(claims)


# -- all modes ---------------------------------------------------------------------------------


def test_multiarch_round_trip(any_registry: RegistryServer, seeder_for: SeederFor) -> None:
    seeder = seeder_for(any_registry)
    repo = unique_repo("multi")
    platforms = ["linux/amd64", "linux/arm/v7", "windows/amd64:10.0.20348.1129"]
    index = seeder.push_multiarch(repo, "v1", platforms, attestations=True)

    resp = seeder.get_manifest(repo, "v1", accept=ACCEPT_ALL)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == OCI_INDEX
    assert resp.headers["Docker-Content-Digest"] == index.digest == sha256_digest(resp.content)

    entries = resp.json()["manifests"]
    assert [e["platform"] for e in entries[:3]] == [platform_dict(p) for p in platforms]
    assert entries[2]["platform"]["os.version"] == "10.0.20348.1129"
    for att, image in zip(entries[3:], entries[:3], strict=True):
        assert att["platform"] == {"architecture": "unknown", "os": "unknown"}
        assert att["annotations"]["vnd.docker.reference.type"] == "attestation-manifest"
        assert att["annotations"]["vnd.docker.reference.digest"] == image["digest"]

    # the child's config really carries the platform
    child = seeder.get_manifest(repo, entries[1]["digest"]).json()
    config = seeder.client.get(f"/v2/{repo}/blobs/{child['config']['digest']}")
    assert config.status_code == 200
    assert (config.json()["architecture"], config.json()["variant"]) == ("arm", "v7")


# -- formats -----------------------------------------------------------------------------------


def test_docker_list_and_nested_index(
    plain_registry: RegistryServer, seeder_for: SeederFor
) -> None:
    seeder = seeder_for(plain_registry)
    repo = unique_repo("formats")
    lst = seeder.push_multiarch(repo, "docker", ["linux/amd64", "linux/arm64"], fmt="docker")
    resp = seeder.get_manifest(repo, "docker")
    assert resp.headers["Content-Type"] == DOCKER_LIST
    assert [c.media_type for c in lst.children] == [DOCKER_MANIFEST, DOCKER_MANIFEST]

    win = seeder.push_image(
        repo,
        None,
        {
            "os": "windows",
            "architecture": "amd64",
            "os.version": "10.0.17763.1",
            "os.features": ["win32k"],
        },
    )
    inner = seeder.push_index(repo, None, [(win, win.platform)])
    outer = seeder.push_index(repo, "nested", [(inner, None)], annotations={"a": "b"})
    body = seeder.get_manifest(repo, "nested").json()
    assert body["manifests"] == [
        {"mediaType": OCI_INDEX, "digest": inner.digest, "size": inner.size}
    ]
    assert body["annotations"] == {"a": "b"}
    assert seeder.get_manifest(repo, outer.digest).status_code == 200

    # single-arch image by tag, and pushing by digest leaves no tag behind
    single = seeder.push_image(repo, "single", "linux/ppc64le")
    assert seeder.get_manifest(repo, "single").headers["Content-Type"] == OCI_MANIFEST
    assert single.digest != win.digest
    tags = seeder.client.get(f"/v2/{repo}/tags/list").json()["tags"]
    assert sorted(tags) == ["docker", "nested", "single"]


def test_schema1_rewrite(plain_registry: RegistryServer, seeder_for: SeederFor) -> None:
    seeder = seeder_for(plain_registry)
    repo = unique_repo("schema1")
    raw, digest = seeder.push_schema1(repo, "old", "linux/arm64/v8")
    doc = json.loads(raw)
    assert doc["schemaVersion"] == 1
    assert doc["architecture"] == "arm64"
    assert json.loads(doc["history"][0]["v1Compatibility"])["os"] == "linux"
    assert "signatures" in doc
    assert digest == schema1_payload_digest(raw)
    assert digest != sha256_digest(raw)
    # the tag itself still serves schema2 to a modern client
    resp = seeder.get_manifest(repo, "old")
    assert resp.headers["Content-Type"] == DOCKER_MANIFEST
    resp = seeder.get_manifest(repo, "old", accept=SCHEMA1_SIGNED)
    assert resp.headers["Content-Type"].startswith(SCHEMA1_SIGNED)


# -- TLS / Basic -------------------------------------------------------------------------------


def test_tls_rejects_plain_http(tls_registry: RegistryServer) -> None:
    assert tls_registry.ca_file is not None
    resp = httpx.get(f"http://{tls_registry.host}/v2/", timeout=5)
    assert resp.status_code == 400
    with tls_registry.client() as client:
        assert client.get("/v2/").status_code == 200


def test_basic_auth(basic_registry: RegistryServer) -> None:
    assert basic_registry.url.startswith("http://")  # htpasswd works without TLS on 2.8
    with basic_registry.client(auth=False) as client:
        anon = client.get("/v2/")
        assert anon.status_code == 401
        assert anon.headers["WWW-Authenticate"].startswith("Basic ")
        wrong = client.get("/v2/", auth=(basic_registry.username or "", "wrong"))
        assert wrong.status_code == 401
        assert basic_registry.password
        ok = client.get("/v2/", auth=(basic_registry.username or "", basic_registry.password))
        assert ok.status_code == 200


def test_basic_over_tls(registry_factory: Callable[..., RegistryServer]) -> None:
    server = registry_factory("basic", tls=True, password="s3cret")
    assert server.url.startswith("https://") and server.ca_file is not None
    with server.client() as client:
        assert client.get("/v2/").status_code == 200
    with Seeder(server) as seeder:
        seeder.push_image("lab/x", "t", "linux/amd64")


# -- token -------------------------------------------------------------------------------------


def test_token_challenge_and_grants(token_registry: RegistryServer) -> None:
    ts = token_registry.token_server
    assert ts is not None
    with token_registry.client() as client:
        resp = client.get("/v2/")
    assert resp.status_code == 401
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'realm="{ts.realm}"' in challenge and f'service="{ts.service}"' in challenge

    before = ts.count("GET")
    user, pwd = token_registry.username, token_registry.password
    assert user and pwd
    params = {"service": ts.service, "scope": "repository:lab/x:pull,push"}
    with httpx.Client(timeout=5) as tc:
        authed = tc.get(ts.realm, params=params, auth=(user, pwd))
        anon = tc.get(ts.realm, params=params)
        wrong = tc.get(ts.realm, params=params, auth=(user, "nope"))
    assert (authed.status_code, anon.status_code, wrong.status_code) == (200, 200, 401)
    assert ts.count("GET") == before + 3
    assert [r.has_auth for r in ts.requests[-3:]] == [True, False, True]

    body = authed.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == ts.expires_in and body["issued_at"].endswith("Z")
    header, claims = _jwt_parts(body["token"])
    assert header["alg"] == "ES256" and "x5c" in header
    assert claims["aud"] == ts.service and claims["iss"] == ts.issuer
    assert claims["access"] == [
        {"type": "repository", "name": "lab/x", "actions": ["pull", "push"]}
    ]
    _, anon_claims = _jwt_parts(anon.json()["token"])
    assert anon_claims["access"][0]["actions"] == ["pull"]

    with token_registry.client() as client:
        headers = {"Authorization": f"Bearer {body['token']}"}
        assert client.get("/v2/", headers=headers).status_code == 200
        missing = client.get("/v2/lab/x/manifests/nope", headers=headers)
        assert missing.status_code == 404  # authorised, just not there
        garbage = client.get("/v2/", headers={"Authorization": "Bearer not.a.token"})
        assert garbage.status_code == 401


def test_token_oauth_post(token_registry: RegistryServer) -> None:
    ts = token_registry.token_server
    assert ts is not None
    ts.identity_token = "identity-xyz"
    user, pwd = token_registry.username, token_registry.password
    assert user and pwd
    form = {"service": ts.service, "scope": "repository:lab/x:pull", "client_id": "archwarden"}
    with httpx.Client(timeout=5) as tc:
        pw = tc.post(
            ts.realm, data={**form, "grant_type": "password", "username": user, "password": pwd}
        )
        rt = tc.post(
            ts.realm, data={**form, "grant_type": "refresh_token", "refresh_token": "identity-xyz"}
        )
        bad = tc.post(ts.realm, data={**form, "grant_type": "refresh_token", "refresh_token": "x"})
    assert (pw.status_code, rt.status_code, bad.status_code) == (200, 200, 401)
    assert "token" not in pw.json() and pw.json()["access_token"]
    assert _jwt_parts(rt.json()["access_token"])[1]["sub"] == ts.identity_subject
    assert [r.grant_type for r in ts.requests[-3:]] == [
        "password",
        "refresh_token",
        "refresh_token",
    ]
    with token_registry.client() as client:
        auth = {"Authorization": f"Bearer {rt.json()['access_token']}"}
        assert client.get("/v2/", headers=auth).status_code == 200


def test_token_kid_header_and_expiry(registry_factory: Callable[..., RegistryServer]) -> None:
    ts = TokenServer(username="u", password="p", key_id="kid", lifetime=-120)
    server = registry_factory("token", token_server=ts, username="u", password="p")
    expired = ts.issue("u", ["repository:lab/x:pull"])
    ts.lifetime = None
    fresh = ts.issue("u", ["repository:lab/x:pull"])
    header, _ = _jwt_parts(fresh)
    assert header["kid"] == libtrust_key_id(ts.signing.key.public_key())
    assert len(header["kid"].split(":")) == 12
    with server.client() as client:
        assert client.get("/v2/", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200
        assert client.get("/v2/", headers={"Authorization": f"Bearer {expired}"}).status_code == 401


# -- lifecycle, proxy --------------------------------------------------------------------------


def test_restart_keeps_port_and_data(registry_factory: Callable[..., RegistryServer]) -> None:
    server = registry_factory("token")
    assert server.token_server is not None
    with Seeder(server) as seeder:
        image = seeder.push_image("lab/x", "t", "linux/riscv64")
        port, realm = server.port, server.token_server.realm
        server.stop(keep_token_server=True)
        assert not server.running and server.token_server.running
        with pytest.raises(httpx.ConnectError):
            seeder.client.get("/v2/")
        server.start()
        assert server.port == port and server.token_server.realm == realm
        assert seeder.get_manifest("lab/x", "t").headers["Docker-Content-Digest"] == image.digest
        server.stop()
        assert not server.token_server.running
        server.start()
        assert server.token_server.running
        server.restart()
        assert seeder.get_manifest("lab/x", image.digest).status_code == 200


def test_start_failure_reports_log_tail(tmp_path: Any) -> None:
    with pytest.raises(RegistryError, match=r"log tail") as info:
        start_registry(tmp_path, extra_config={"storage": {"inmemory": {}}}, timeout=5)
    assert "storage" in str(info.value).lower()


@pytest.mark.parametrize("mode", ["plain", "tls"])
def test_counting_proxy(
    mode: str, request: pytest.FixtureRequest, registry_factory: Callable[..., RegistryServer]
) -> None:
    upstream: RegistryServer = request.getfixturevalue(f"{mode}_registry")
    repo = unique_repo("proxy")
    with CountingProxy(upstream) as proxy, Seeder(proxy) as seeder:
        assert proxy.url.startswith("https://" if mode == "tls" else "http://")
        image = seeder.push_image(repo, "t", "linux/amd64")
        # 2 blobs x (POST + PUT) + 1 manifest PUT; every upload went through the proxy
        assert proxy.count("POST") == 2
        assert proxy.count("PUT", path_contains="/blobs/uploads/") == 2
        assert proxy.count("PUT", path_contains="/manifests/") == 1
        proxy.reset()
        head = seeder.client.head(f"/v2/{repo}/manifests/t", headers={"Accept": ACCEPT_ALL})
        assert head.headers["Docker-Content-Digest"] == image.digest
        manifest = seeder.get_manifest(repo, "t")
        layer = manifest.json()["layers"][0]
        blob = seeder.client.get(f"/v2/{repo}/blobs/{layer['digest']}")
        assert sha256_digest(blob.content) == layer["digest"]
        assert seeder.client.get(f"/v2/{repo}/manifests/nope").status_code == 404
        assert [(r.method, r.status) for r in proxy.snapshot()] == [
            ("HEAD", 200),
            ("GET", 200),
            ("GET", 200),
            ("GET", 404),
        ]
        assert proxy.counter()[("GET", f"/v2/{repo}/manifests/t")] == 1


def test_counting_proxy_upstream_down(registry_factory: Callable[..., RegistryServer]) -> None:
    server = registry_factory("plain")
    with CountingProxy(server) as proxy, httpx.Client(base_url=proxy.url, timeout=5) as client:
        assert client.get("/v2/").status_code == 200
        server.stop()
        assert client.get("/v2/").status_code == 502
        server.start()
        assert client.get("/v2/").status_code == 200
        assert [r.status for r in proxy.snapshot()] == [200, 502, 200]
