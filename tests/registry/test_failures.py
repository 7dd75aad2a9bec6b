"""Failures: real registries where they can produce the fault, small local servers otherwise."""

from __future__ import annotations

import asyncio
import functools
import time
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from archwarden import registry
from tests.registry import faults
from tests.registry.helpers import client_for, settings_for
from tests.support.images import Seeder, unique_repo
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.registry


def insecure(*hosts: str, **overrides: Any) -> registry.ClientSettings:
    values: dict[str, Any] = {
        "registries": {h: registry.RegistrySettings(insecure=True) for h in hosts},
        "backoff": 0.01,
        "timeout": 2.0,
    }
    values.update(overrides)
    return registry.ClientSettings(**values)


# -- authentication on the real registry --------------------------------------------------------


async def test_basic_wrong_password(
    basic_registry: RegistryServer, seeder_for: Callable[[Any], Seeder]
) -> None:
    repo = unique_repo("auth")
    seeder_for(basic_registry).push_image(repo, "1", "linux/amd64")
    async with client_for(basic_registry, password="wrong-password") as client:
        with pytest.raises(registry.AuthenticationFailed) as caught:
            await client.resolve(f"{basic_registry.host}/{repo}:1")
    message = str(caught.value)
    assert message == (
        f"registry {basic_registry.host}: unauthorized: the registry rejected the credentials: "
        f"{repo}:1"
    )
    assert "wrong-password" not in message


async def test_basic_without_credentials(basic_registry: RegistryServer) -> None:
    settings = settings_for(basic_registry)
    async with registry.RegistryClient(settings) as client:
        with pytest.raises(registry.AuthenticationFailed, match="no credentials"):
            await client.resolve(f"{basic_registry.host}/any/thing:1")


async def test_token_wrong_password(
    token_registry: RegistryServer, seeder_for: Callable[[Any], Seeder]
) -> None:
    repo = unique_repo("tok")
    seeder_for(token_registry).push_image(repo, "1", "linux/amd64")
    async with client_for(token_registry, password="not-it") as client:
        with pytest.raises(registry.AuthenticationFailed, match="token server refused"):
            await client.resolve(f"{token_registry.host}/{repo}:1")


async def test_token_is_cached_per_scope_and_second_repo_preauthenticates(
    token_registry: RegistryServer, seeder_for: Callable[[Any], Seeder]
) -> None:
    seeder = seeder_for(token_registry)
    repos = [unique_repo("tc"), unique_repo("tc")]
    for repo in repos:
        seeder.push_multiarch(repo, "1", ["linux/amd64", "linux/arm64"])
    token_server = token_registry.token_server
    assert token_server is not None
    seen: list[tuple[str, str]] = []
    async with client_for(token_registry, observer=lambda h, c, s: seen.append((h, c))) as client:
        token_server.reset()
        await client.resolve(f"{token_registry.host}/{repos[0]}:1")
        # 401 challenge, token GET, manifest GET (a single-arch config GET would follow).
        assert [c for h, c in seen] == ["401", "200", "200"]
        assert token_server.count("GET") == 1
        seen.clear()
        await client.resolve(f"{token_registry.host}/{repos[1]}:1")
        # Known challenge: one token GET for the new scope, then one manifest GET, no 401.
        assert [c for h, c in seen] == ["200", "200"]
        assert token_server.count("GET") == 2
        seen.clear()
        await client.resolve(f"{token_registry.host}/{repos[1]}:1")
        assert token_server.count("GET") == 2  # the token is reused until near expiry


# -- transport failures ---------------------------------------------------------------------------


async def test_tls_registry_without_its_ca(tls_registry: RegistryServer) -> None:
    settings = registry.ClientSettings(timeout=3.0)
    async with registry.RegistryClient(settings) as client:
        with pytest.raises(registry.RegistryUnavailable, match="TLS certificate not trusted"):
            await client.resolve(f"{tls_registry.host}/x/y:1")


async def test_registry_that_is_down(registry_factory: Callable[..., RegistryServer]) -> None:
    server = registry_factory("plain")
    host = server.host
    server.stop()
    async with registry.RegistryClient(insecure(host)) as client:
        with pytest.raises(registry.RegistryUnavailable) as caught:
            await client.resolve(f"{host}/team/web:1")
    assert str(caught.value) == (
        f"registry {host}: cannot connect (connection refused): team/web:1"
    )


async def test_registry_stalling_past_the_timeout() -> None:
    async with faults.stalled_server() as host:
        settings = insecure(host, timeout=0.3, max_retries=1)
        async with registry.RegistryClient(settings) as client:
            started = time.monotonic()
            with pytest.raises(registry.RegistryTimeout, match=r"no answer within 0\.3s"):
                await client.resolve(f"{host}/team/web:1")
            # One retry after a timeout, then give up: bounded by two timeouts plus slack.
            assert time.monotonic() - started < 2.0


# -- status codes ---------------------------------------------------------------------------------


async def test_429_with_retry_after_is_honoured() -> None:
    manifest, config = faults.single_image({"os": "linux", "architecture": "arm64"})
    calls = {"manifest": 0}

    async def handler(request: web.Request) -> web.StreamResponse:
        if "/manifests/" in request.path:
            calls["manifest"] += 1
            if calls["manifest"] == 1:
                return web.Response(
                    status=429,
                    headers={"Retry-After": "1"},
                    text='{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}',
                )
            return faults.manifest_response(manifest)
        return web.Response(body=config)

    async with faults.fault_server(handler) as server:
        async with registry.RegistryClient(insecure(server.host)) as client:
            started = time.monotonic()
            answer = await client.resolve(f"{server.host}/team/web:1")
            waited = time.monotonic() - started
    assert answer.canonical == ["linux/arm64"]
    assert calls["manifest"] == 2
    assert 0.9 <= waited < 3.0


async def test_429_with_long_retry_after_fails_at_once() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=429, headers={"Retry-After": "3600"}, text="not json")

    async with faults.fault_server(handler) as server:
        async with registry.RegistryClient(insecure(server.host)) as client:
            with pytest.raises(registry.RateLimited) as caught:
                await client.resolve(f"{server.host}/team/web:1")
        assert len(server.requests) == 1
    assert caught.value.retry_after == 3600
    assert "retry after 3600s" in str(caught.value)


async def test_500_is_retried_with_bounded_count() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=500, text='{"errors":[{"code":"UNKNOWN","message":"disk on fire"}]}'
        )

    async with faults.fault_server(handler) as server:
        async with registry.RegistryClient(insecure(server.host, max_retries=2)) as client:
            with pytest.raises(registry.RegistryServerError) as caught:
                await client.resolve(f"{server.host}/team/web:1")
        assert len(server.requests) == 3
    assert str(caught.value) == (
        f"registry {server.host}: HTTP 500 UNKNOWN (disk on fire): team/web:1"
    )


# -- hostile documents ----------------------------------------------------------------------------


async def test_oversize_manifest_is_refused() -> None:
    big = b'{"schemaVersion":2,"padding":"' + b"x" * (5 * 1024 * 1024) + b'"}'

    async def handler(request: web.Request) -> web.StreamResponse:
        return faults.manifest_response(big)

    async with faults.fault_server(handler) as server:
        async with registry.RegistryClient(insecure(server.host)) as client:
            with pytest.raises(registry.ManifestTooLarge, match="exceeds the 4194304-byte cap"):
                await client.resolve(f"{server.host}/team/web:1")


async def test_oversize_manifest_without_content_length_is_cut_off() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": faults.OCI_MANIFEST})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(80):  # 80 MiB offered; the client must stop after 4 MiB
            await response.write(b"x" * (1024 * 1024))
        return response

    async with faults.fault_server(handler) as server:
        async with registry.RegistryClient(insecure(server.host)) as client:
            with pytest.raises(registry.ManifestTooLarge):
                await client.resolve(f"{server.host}/team/web:1")


async def test_digest_mismatch_is_refused() -> None:
    manifest, _ = faults.single_image({"os": "linux", "architecture": "amd64"})
    other, _ = faults.single_image({"os": "linux", "architecture": "s390x"})

    async def handler(request: web.Request) -> web.StreamResponse:
        # Claims the digest of one document, sends another.
        return web.Response(
            body=other,
            headers={
                "Content-Type": faults.OCI_MANIFEST,
                "Docker-Content-Digest": faults.digest(manifest),
            },
        )

    async with faults.fault_server(handler) as server:
        async with registry.RegistryClient(insecure(server.host)) as client:
            with pytest.raises(registry.DigestMismatch, match="manifest digest mismatch"):
                await client.resolve(f"{server.host}/team/web:1")
            with pytest.raises(registry.DigestMismatch):
                await client.resolve(f"{server.host}/team/web@{faults.digest(manifest)}")


async def test_config_blob_digest_mismatch() -> None:
    manifest, _config = faults.single_image({"os": "linux", "architecture": "amd64"})

    async def handler(request: web.Request) -> web.StreamResponse:
        if "/blobs/" in request.path:
            return web.Response(body=b'{"os":"linux","architecture":"arm64"}')
        return faults.manifest_response(manifest)

    async with faults.fault_server(handler) as server:
        async with registry.RegistryClient(insecure(server.host)) as client:
            with pytest.raises(registry.DigestMismatch, match="blob digest mismatch"):
                await client.resolve(f"{server.host}/team/web:1")


# -- redirects and credentials --------------------------------------------------------------------


async def test_redirect_to_another_host_carries_no_authorization() -> None:
    manifest, config = faults.single_image({"os": "linux", "architecture": "ppc64le"})

    async def storage(request: web.Request) -> web.StreamResponse:
        return web.Response(body=config)

    async with faults.fault_server(storage) as blob_store:

        async def registry_handler(request: web.Request) -> web.StreamResponse:
            if request.headers.get("Authorization") is None:
                return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})
            if "/blobs/" in request.path:
                raise web.HTTPTemporaryRedirect(f"{blob_store.url}/signed{request.path}?sig=1")
            return faults.manifest_response(manifest)

        async with faults.fault_server(registry_handler) as server:
            credentials = registry.CredentialStore(
                {server.host: registry.Credential(username="u", password="secret-pass")}
            )
            async with registry.RegistryClient(insecure(server.host), credentials) as client:
                answer = await client.resolve(f"{server.host}/team/web:1")
            assert answer.canonical == ["linux/ppc64le"]
            assert any(r.authorization for r in server.requests)
        assert [r.path.split("?")[0] for r in blob_store.requests] == [
            f"/signed/v2/team/web/blobs/{faults.digest(config)}"
        ]
        assert all(r.authorization is None for r in blob_store.requests)


async def test_credentials_never_go_to_a_mirror_or_elsewhere() -> None:
    manifest, config = faults.single_image({"os": "linux", "architecture": "arm64"})

    async def serve(request: web.Request) -> web.StreamResponse:
        if "/blobs/" in request.path:
            return web.Response(body=config)
        return faults.manifest_response(manifest)

    async with faults.fault_server(serve) as mirror, faults.fault_server(serve) as upstream:
        settings = registry.ClientSettings(
            registries={
                upstream.host: registry.RegistrySettings(
                    insecure=True, mirrors=(f"http://{mirror.host}",)
                )
            }
        )
        credentials = registry.CredentialStore(
            {upstream.host: registry.Credential(registry_token="upstream-only-token")}
        )
        async with registry.RegistryClient(settings, credentials) as client:
            answer = await client.resolve(f"{upstream.host}/team/web:1")
        assert answer.canonical == ["linux/arm64"]
        assert len(mirror.requests) == 2  # served from the mirror ...
        assert upstream.requests == []  # ... so upstream was never asked
        assert all(r.authorization is None for r in mirror.requests)


async def test_mirror_missing_the_image_falls_back_to_upstream(
    plain_registry: RegistryServer,
    registry_factory: Callable[..., RegistryServer],
    seeder_for: Callable[[Any], Seeder],
) -> None:
    repo = unique_repo("mirror")
    seeder_for(plain_registry).push_multiarch(repo, "1", ["linux/amd64", "linux/s390x"])
    empty_mirror = registry_factory("plain")
    seen: list[tuple[str, str]] = []
    settings = registry.ClientSettings(
        registries={
            plain_registry.host: registry.RegistrySettings(
                insecure=True, mirrors=(f"http://{empty_mirror.host}",)
            )
        }
    )
    async with registry.RegistryClient(
        settings, observer=lambda h, c, s: seen.append((h, c))
    ) as client:
        answer = await client.resolve(f"{plain_registry.host}/{repo}:1")
        assert answer.canonical == ["linux/amd64", "linux/s390x"]
        assert seen == [(empty_mirror.host, "404"), (plain_registry.host, "200")]
        empty_mirror.stop()
        seen.clear()
        answer = await client.resolve(f"{plain_registry.host}/{repo}:1")
        assert answer.canonical == ["linux/amd64", "linux/s390x"]
        assert seen == [(empty_mirror.host, "error"), (plain_registry.host, "200")]


# -- SSRF -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["169.254.169.254", "169.254.169.254:80", "[fe80::1]:5000", "[fd00:ec2::254]", "0.0.0.0:5000"],
)
async def test_metadata_and_link_local_hosts_are_refused(host: str) -> None:
    seen: list[tuple[str, str]] = []
    async with registry.RegistryClient(observer=lambda h, c, s: seen.append((h, c))) as client:
        with pytest.raises(registry.ForbiddenAddress, match="link-local or metadata address"):
            await client.resolve(f"{host}/latest/meta-data:1")
    assert seen == [(host, "error")]  # refused before any byte left the machine


async def test_dns_name_resolving_to_metadata_is_refused() -> None:
    async def hostile_dns(host: str, port: int) -> list[str]:
        return ["10.0.0.7", "169.254.169.254"] if host == "registry.evil.test" else []

    async with registry.RegistryClient(resolver=hostile_dns) as client:
        with pytest.raises(registry.ForbiddenAddress) as caught:
            await client.resolve("registry.evil.test/team/web:1")
    assert "registry.evil.test resolves to 169.254.169.254" in str(caught.value)


async def test_configured_registry_may_live_on_a_link_local_address() -> None:
    looked_up: list[str] = []

    async def hostile_dns(host: str, port: int) -> list[str]:
        looked_up.append(host)
        return ["169.254.10.10"]

    settings = registry.ClientSettings(
        registries={"registry.internal.test": registry.RegistrySettings()}, timeout=1.0
    )
    async with registry.RegistryClient(settings, resolver=hostile_dns) as client:
        with pytest.raises(registry.RegistryError) as caught:
            await client.resolve("registry.internal.test/team/web:1")
    # The guard let it through (no ForbiddenAddress, the guard's resolver was never asked);
    # the connection then fails only because the name does not exist here.
    assert not isinstance(caught.value, registry.ForbiddenAddress)
    assert looked_up == []


async def test_redirect_to_metadata_is_refused() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect("http://169.254.169.254/latest/meta-data/")

    async with faults.fault_server(handler) as server:
        async with registry.RegistryClient(insecure(server.host)) as client:
            with pytest.raises(registry.ForbiddenAddress):
                await client.resolve(f"{server.host}/team/web:1")


async def test_token_realm_on_metadata_is_refused() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="http://169.254.169.254/token",service="x"'},
        )

    async with faults.fault_server(handler) as server:
        async with registry.RegistryClient(insecure(server.host)) as client:
            with pytest.raises(registry.ForbiddenAddress, match="token realm"):
                await client.resolve(f"{server.host}/team/web:1")


async def test_concurrent_failures_do_not_leak_tracebacks(tmp_path: Path) -> None:
    # A mix of hostile inputs resolved at once: every one ends as a RegistryError or an
    # InvalidReference, nothing else escapes.
    async with faults.stalled_server() as stalled:
        settings = insecure(stalled, timeout=0.2, max_retries=0)
        async with registry.RegistryClient(settings) as client:
            results = await asyncio.gather(
                client.resolve(f"{stalled}/a/b:1"),
                client.resolve("169.254.169.254/a:1"),
                client.resolve("127.0.0.1:1/a:1"),
                return_exceptions=True,
            )
    assert all(isinstance(r, registry.RegistryError) for r in results), results


@pytest.mark.parametrize(
    "location", ["http://[::1\\x]/v2/", "http://h\\x/", "http://127.0.0.1:99999/", "ftp://x/"]
)
async def test_unusable_redirect_is_a_registry_error(location: str) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=307, headers={"Location": location})

    async with faults.fault_server(handler) as server:
        async with registry.RegistryClient(insecure(server.host)) as client:
            with pytest.raises(registry.RegistryError) as caught:
                await client.resolve(f"{server.host}/team/web:1")
    assert str(caught.value).startswith(f"registry {server.host}: ")


@functools.cache
def gzip_bomb() -> bytes:
    """256 MiB of zeros gzipped twice: under a kilobyte on the wire."""

    def gzip(chunks: Iterable[bytes]) -> bytes:
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
        return b"".join([*(compressor.compress(c) for c in chunks), compressor.flush()])

    return gzip([gzip(b"\0" * (1 << 20) for _ in range(256))])


@pytest.mark.parametrize("status", [200, 500])
async def test_compressed_bodies_are_neither_asked_for_nor_decoded(status: int) -> None:
    bomb = gzip_bomb()
    assert len(bomb) < 1024

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=status,
            body=bomb,
            headers={"Content-Type": faults.OCI_MANIFEST, "Content-Encoding": "gzip, gzip"},
        )

    async with faults.fault_server(handler) as server:
        settings = insecure(server.host, max_retries=0)
        async with registry.RegistryClient(settings) as client:
            started = time.monotonic()
            with pytest.raises(registry.RegistryError) as caught:
                await client.resolve(f"{server.host}/team/web:1")
            elapsed = time.monotonic() - started
        seen = server.accept_encodings
    assert seen and set(seen) == {"identity"}
    if status == 200:
        assert isinstance(caught.value, registry.InvalidManifest)
        assert "Content-Encoding 'gzip, gzip'" in str(caught.value)
    else:
        assert str(caught.value) == f"registry {server.host}: HTTP 500: team/web:1"
    # Decoding 256 MiB took about a second of blocked event loop before.
    assert elapsed < 0.5


# -- slow registries --------------------------------------------------------------------------


async def test_a_trickling_registry_meets_the_overall_deadline() -> None:
    async with faults.trickle_server(interval=0.1) as host:
        settings = insecure(host, timeout=0.5, deadline=1.0, max_retries=0)
        async with registry.RegistryClient(settings) as client:
            started = time.monotonic()
            with pytest.raises(registry.RegistryTimeout) as caught:
                await client.resolve(f"{host}/team/web:1")
            elapsed = time.monotonic() - started
    assert str(caught.value) == f"registry {host}: no complete answer within 1s: team/web:1"
    assert 0.9 < elapsed < 2.0


async def test_a_slow_registry_cannot_take_the_connections_of_others() -> None:
    manifest, config = faults.single_image({"os": "linux", "architecture": "arm64"})

    async def healthy(request: web.Request) -> web.StreamResponse:
        if "/blobs/" in request.path:
            return web.Response(body=config)
        return faults.manifest_response(manifest)

    async with faults.stalled_server() as stalled, faults.fault_server(healthy) as server:
        settings = insecure(stalled, server.host, timeout=3.0, max_retries=0)
        async with registry.RegistryClient(settings) as client:
            # More stalled lookups than a shared pool of 100 connections holds.
            hung = [
                asyncio.create_task(client.resolve(f"{stalled}/team/web:{i}")) for i in range(110)
            ]
            await asyncio.sleep(0.3)
            started = time.monotonic()
            answer = await client.resolve(f"{server.host}/team/web:1")
            elapsed = time.monotonic() - started
            for task in hung:
                task.cancel()
            await asyncio.gather(*hung, return_exceptions=True)
    assert answer.canonical == ["linux/arm64"]
    assert elapsed < 1.0
