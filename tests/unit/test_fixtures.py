"""Every real fixture resolved end to end through RegistryClient over MockTransport, plus the
client's error, retry, auth and redirect behaviour."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from archwarden import platforms, reference
from archwarden.platforms import Platform
from archwarden.registry import (
    AccessDenied,
    AuthenticationFailed,
    Credential,
    CredentialStore,
    DigestMismatch,
    ImageNotFound,
    InvalidManifest,
    ManifestTooLarge,
    RateLimited,
    RegistryServerError,
    RegistrySettings,
    _client,
)

from .fakes import (
    FIXTURES,
    HOST,
    OCI_INDEX,
    OCI_MANIFEST,
    FakeRegistry,
    digest_of,
    error_body,
    fixture,
)
from .fakes import make_client as client_for

DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA2 = "application/vnd.docker.distribution.manifest.v2+json"
SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
SCHEMA1_DIGEST = "sha256:7364fea9d84ee548ab67d4c46c6006289800c98de3fbf8c0a97138dfcc23f000"
NESTED_MISSING = "sha256:601570aaff1b68a61eb9c85b8beca1644e698003e0cdb5bce960f193d265a8b7"
REPO = "fixtures/x"


def ps(*specs: str) -> tuple[Platform, ...]:
    """Parsed, normalised, sorted and de-duplicated, as ImagePlatforms.platforms holds them."""
    return tuple(sorted({platforms.parse(s) for s in specs}))


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture(autouse=True)
def no_real_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Backoff and Retry-After waits are recorded instead of slept."""
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float, result: Any = None) -> Any:
        slept.append(delay)
        return await real_sleep(0, result)

    monkeypatch.setattr(_client.asyncio, "sleep", fake_sleep)
    return slept


def requests_summary(registry: FakeRegistry) -> list[str]:
    return [f"{r.method} {r.url.host}{r.url.path}" for r in registry.requests]


# -- the fixture set -----------------------------------------------------------------------------

# file, content type served, expected top-level digest, expected platforms
SIMPLE_FIXTURES = [
    (
        "regclient_oci_index_arm_v6_v7.json",
        OCI_INDEX,
        "sha256:6fe828b32b9b4572f32b16c1c0a4d675660b19ec207d010724309374252c2d6d",
        ps("linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6"),
    ),
    (
        "regclient_oci_index_unknown_builder_refs.json",
        OCI_INDEX,
        "sha256:7ceb9b6bcc274697d0c38be6214b50cec79d601bc61708747d3f6cb772f6c6fa",
        ps("linux/amd64", "linux/arm64"),
    ),
    (
        "containers_image_docker_list_schema1_children.json",
        DOCKER_LIST,
        "sha256:ae55d2bdfcc9f24b2ac571f0081a64d6e6089b2c5e503ff3b718a646c26cbd3d",
        # containerd's answer: unknown variants are not rewritten.
        (
            Platform("linux", "amd64"),
            Platform("linux", "arm", "armv7"),
            Platform("linux", "arm64", "armv8"),
            Platform("linux", "ppc64le"),
            Platform("linux", "s390x"),
        ),
    ),
    (
        "containers_image_oci_index_arm_variants.json",
        OCI_INDEX,
        "sha256:65a5c903f49f59eadcdac913a0bf8ad01ecdc341f79ecbe826efeb7dfe244f4a",
        (
            Platform("linux", "amd64"),
            Platform("linux", "arm", "unrecognized-present"),
            Platform("linux", "arm", "v6"),
            Platform("linux", "arm", "v7"),
        ),
    ),
    (
        "containers_image_oci_index_artifacttype_osfeatures.json",
        OCI_INDEX,
        "sha256:f2f99b581189a99577e0e8344704b7d00736e554ef748d7e3e3cdc7113c0bf40",
        (
            Platform("linux", "amd64", os_features=("sse4",)),
            Platform("linux", "arm64"),
            Platform("linux", "ppc64le"),
        ),
    ),
    (
        "containers_image_schema1_signed.json",
        SCHEMA1_SIGNED,
        SCHEMA1_DIGEST,
        ps("linux/amd64"),
    ),
    (
        "containers_image_schema1_unsigned.json",
        SCHEMA1,
        SCHEMA1_DIGEST,
        ps("linux/amd64"),
    ),
    (
        "buildkit_doc_index_with_attestation.json",
        OCI_INDEX,
        digest_of(fixture("buildkit_doc_index_with_attestation.json")),
        ps("linux/amd64"),
    ),
]


@pytest.mark.parametrize(
    ("name", "content_type", "digest", "expected"),
    SIMPLE_FIXTURES,
    ids=[f[0].removesuffix(".json") for f in SIMPLE_FIXTURES],
)
@pytest.mark.parametrize("by", ["tag", "digest"])
async def test_fixture_platforms(
    registry: FakeRegistry,
    name: str,
    content_type: str,
    digest: str,
    expected: tuple[Platform, ...],
    by: str,
) -> None:
    registry.put_manifest(
        REPO, fixture(name), tags=("tag",), content_type=content_type, digest=digest
    )
    ref = f"{HOST}/{REPO}:tag" if by == "tag" else f"{HOST}/{REPO}@{digest}"
    async with client_for(registry) as client:
        answer = await client.resolve(ref)
    assert answer.platforms == expected
    assert answer.digest == digest
    assert answer.media_type == content_type
    assert answer.stale is False
    target = "tag" if by == "tag" else digest
    # An index whose entries all carry a platform costs exactly one request.
    assert requests_summary(registry) == [f"GET {HOST}/v2/{REPO}/manifests/{target}"]
    sent = registry.requests[0]
    for media_type in (OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_SCHEMA2, SCHEMA1_SIGNED):
        assert media_type in sent.headers["accept"]


def test_every_fixture_file_is_covered() -> None:
    covered = {f[0] for f in SIMPLE_FIXTURES} | {
        "regclient_oci_manifest_arm_v7.json",
        "regclient_oci_config_arm_v7.json",
        "containers_image_schema2_httpd_amd64.json",
        "containers_image_schema2_httpd_amd64_config.json",
        "image_spec_nested_index.json",
    }
    assert {p.name for p in FIXTURES.glob("*.json")} == covered


async def test_fixture_6_keeps_os_features_for_display(registry: FakeRegistry) -> None:
    name = "containers_image_oci_index_artifacttype_osfeatures.json"
    registry.put_manifest(REPO, fixture(name), tags=("tag",))
    async with client_for(registry) as client:
        answer = await client.resolve(f"{HOST}/{REPO}:tag")
    assert answer.canonical == ["linux/amd64", "linux/arm64", "linux/ppc64le"]
    assert [p.detailed for p in answer.platforms] == [
        "linux/amd64 [os.features=sse4]",
        "linux/arm64",
        "linux/ppc64le",
    ]
    assert answer.to_json()["platformDetails"] == [
        {"os": "linux", "architecture": "amd64", "os.features": ["sse4"]}
    ]


@pytest.mark.parametrize(
    ("manifest", "config", "content_type", "expected"),
    [
        (
            "regclient_oci_manifest_arm_v7.json",
            "regclient_oci_config_arm_v7.json",
            OCI_MANIFEST,
            Platform("linux", "arm", "v7"),
        ),
        (
            "containers_image_schema2_httpd_amd64.json",
            "containers_image_schema2_httpd_amd64_config.json",
            DOCKER_SCHEMA2,
            Platform("linux", "amd64"),
        ),
    ],
)
async def test_single_manifest_platform_comes_from_the_config_blob(
    registry: FakeRegistry, manifest: str, config: str, content_type: str, expected: Platform
) -> None:
    digest = registry.put_manifest(REPO, fixture(manifest), tags=("tag",))
    config_digest = registry.put_blob(REPO, fixture(config))
    assert config_digest == json.loads(fixture(manifest))["config"]["digest"]
    async with client_for(registry) as client:
        answer = await client.resolve(f"{HOST}/{REPO}:tag")
    assert answer.platforms == (expected,)
    assert answer.digest == digest == digest_of(fixture(manifest))
    assert answer.media_type == content_type
    assert requests_summary(registry) == [
        f"GET {HOST}/v2/{REPO}/manifests/tag",
        f"GET {HOST}/v2/{REPO}/blobs/{config_digest}",
    ]


async def test_missing_config_blob_is_image_not_found(registry: FakeRegistry) -> None:
    registry.put_manifest(REPO, fixture("regclient_oci_manifest_arm_v7.json"), tags=("tag",))
    config = "sha256:adc1ef6389168fbca31b7480d561a217e54f0fa883162ced06147b5bd61f1e7f"
    async with client_for(registry) as client:
        with pytest.raises(ImageNotFound) as caught:
            await client.resolve(f"{HOST}/{REPO}:tag")
    assert str(caught.value) == f"registry {HOST}: blob unknown: {REPO}@{config}"


async def test_config_blob_with_wrong_bytes_is_a_digest_mismatch(registry: FakeRegistry) -> None:
    registry.put_manifest(REPO, fixture("regclient_oci_manifest_arm_v7.json"), tags=("tag",))
    config = "sha256:adc1ef6389168fbca31b7480d561a217e54f0fa883162ced06147b5bd61f1e7f"
    registry.blobs[(REPO, config)] = b'{"os":"linux","architecture":"amd64"}'
    async with client_for(registry) as client:
        with pytest.raises(DigestMismatch, match="blob digest mismatch"):
            await client.resolve(f"{HOST}/{REPO}:tag")


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", ""])
async def test_schema1_with_a_generic_content_type_is_sniffed(
    registry: FakeRegistry, content_type: str
) -> None:
    registry.put_manifest(
        REPO,
        fixture("containers_image_schema1_signed.json"),
        tags=("tag",),
        content_type=content_type,
        digest=SCHEMA1_DIGEST,
    )
    async with client_for(registry) as client:
        answer = await client.resolve(f"{HOST}/{REPO}:tag")
    assert answer.platforms == ps("linux/amd64")
    assert answer.digest == SCHEMA1_DIGEST
    assert answer.media_type == SCHEMA1_SIGNED


async def test_signed_schema1_raw_digest_is_not_the_manifest_digest(
    registry: FakeRegistry,
) -> None:
    raw = fixture("containers_image_schema1_signed.json")
    raw_digest = digest_of(raw)
    assert raw_digest.startswith("sha256:e028c450")
    # A registry claiming the raw-bytes digest is wrong: the digest covers the stripped payload.
    registry.put_manifest(REPO, raw, tags=("tag",), content_type=SCHEMA1_SIGNED, digest=raw_digest)
    async with client_for(registry) as client:
        with pytest.raises(DigestMismatch) as caught:
            await client.resolve(f"{HOST}/{REPO}:tag")
    assert str(caught.value) == (
        f"registry {HOST}: manifest digest mismatch: expected {raw_digest}, "
        f"got {SCHEMA1_DIGEST}: {REPO}:tag"
    )


# -- nested indexes ------------------------------------------------------------------------------


def index(*entries: dict[str, Any], media_type: str = OCI_INDEX) -> bytes:
    return json.dumps(
        {"schemaVersion": 2, "mediaType": media_type, "manifests": list(entries)}, indent=2
    ).encode()


def entry(
    digest: str, platform: str | None = None, media_type: str = OCI_MANIFEST
) -> dict[str, Any]:
    out: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": 100}
    if platform is not None:
        os_name, arch, *variant = platform.split("/")
        out["platform"] = {"os": os_name, "architecture": arch}
        if variant:
            out["platform"]["variant"] = variant[0]
    return out


def fake_digest(n: int) -> str:
    return "sha256:" + f"{n:x}".rjust(64, "0")


async def test_fixture_14_nested_index_is_fetched(registry: FakeRegistry) -> None:
    nested = index(
        entry(fake_digest(1), "linux/s390x"),
        entry(fake_digest(2), "linux/arm/v5"),
        entry(fake_digest(3), "unknown/unknown"),
    )
    nested_digest = registry.put_manifest(REPO, nested)
    parent = json.loads(fixture("image_spec_nested_index.json"))
    assert parent["manifests"][1]["digest"] == NESTED_MISSING
    parent["manifests"][1]["digest"] = nested_digest
    parent_raw = json.dumps(parent).encode()
    parent_digest = registry.put_manifest(REPO, parent_raw, tags=("tag",))
    async with client_for(registry) as client:
        answer = await client.resolve(f"{HOST}/{REPO}:tag")
    assert answer.platforms == ps("linux/ppc64le", "linux/s390x", "linux/arm/v5")
    assert answer.digest == parent_digest
    assert requests_summary(registry) == [
        f"GET {HOST}/v2/{REPO}/manifests/tag",
        f"GET {HOST}/v2/{REPO}/manifests/{nested_digest}",
    ]


async def test_fixture_14_missing_nested_index_is_image_not_found(registry: FakeRegistry) -> None:
    registry.put_manifest(REPO, fixture("image_spec_nested_index.json"), tags=("tag",))
    async with client_for(registry) as client:
        with pytest.raises(ImageNotFound) as caught:
            await client.resolve(f"{HOST}/{REPO}:tag")
    assert str(caught.value) == f"registry {HOST}: manifest unknown: {REPO}@{NESTED_MISSING}"


async def test_index_entry_without_platform_is_fetched_and_its_config_read(
    registry: FakeRegistry,
) -> None:
    config = registry.put_blob(REPO, b'{"os":"linux","architecture":"riscv64"}')
    child = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/octet-stream", "digest": config, "size": 40},
            "layers": [],
        }
    ).encode()
    child_digest = registry.put_manifest(REPO, child)
    registry.put_manifest(
        REPO, index(entry(child_digest), entry(fake_digest(1), "linux/amd64")), tags=("tag",)
    )
    async with client_for(registry) as client:
        answer = await client.resolve(f"{HOST}/{REPO}:tag")
    assert answer.platforms == ps("linux/amd64", "linux/riscv64")
    assert registry.count("GET", "/blobs/") == 1


async def test_index_entry_with_an_empty_platform_is_fetched(registry: FakeRegistry) -> None:
    config = registry.put_blob(REPO, b'{"os":"linux","architecture":"arm64"}')
    child = json.dumps(
        {"mediaType": OCI_MANIFEST, "config": {"digest": config, "size": 38}, "layers": []}
    ).encode()
    child_digest = registry.put_manifest(REPO, child)
    incomplete = entry(child_digest)
    incomplete["platform"] = {"os": "linux"}
    registry.put_manifest(REPO, index(incomplete), tags=("tag",))
    async with client_for(registry) as client:
        answer = await client.resolve(f"{HOST}/{REPO}:tag")
    assert answer.canonical == ["linux/arm64"]


def chain(registry: FakeRegistry, depth: int) -> None:
    """Tag ``tag`` names an index nested ``depth`` levels; the innermost lists linux/amd64."""
    digest = registry.put_manifest(REPO, index(entry(fake_digest(1), "linux/amd64")))
    for _ in range(depth):
        digest = registry.put_manifest(REPO, index(entry(digest, media_type=OCI_INDEX)))
    registry.manifests[(REPO, "tag")] = registry.manifests[(REPO, digest)]


async def test_nested_indexes_up_to_the_depth_limit_resolve(registry: FakeRegistry) -> None:
    chain(registry, 2)
    async with client_for(registry, max_index_depth=2) as client:
        answer = await client.resolve(f"{HOST}/{REPO}:tag")
    assert answer.platforms == ps("linux/amd64")
    assert registry.count("GET", "/manifests/") == 3


async def test_nested_indexes_deeper_than_the_limit_are_refused(registry: FakeRegistry) -> None:
    chain(registry, 3)
    async with client_for(registry, max_index_depth=2) as client:
        with pytest.raises(InvalidManifest, match="indexes nested deeper than 2 levels"):
            await client.resolve(f"{HOST}/{REPO}:tag")
    assert registry.count("GET", "/manifests/") == 3


async def test_default_depth_limit_stops_a_long_chain(registry: FakeRegistry) -> None:
    chain(registry, 10)
    async with client_for(registry) as client:
        with pytest.raises(InvalidManifest, match="indexes nested deeper than 4 levels"):
            await client.resolve(f"{HOST}/{REPO}:tag")
    assert registry.count("GET", "/manifests/") == 5


async def test_attestation_only_index_has_no_runnable_images(registry: FakeRegistry) -> None:
    attestation = entry(fake_digest(2), "unknown/unknown")
    attestation["annotations"] = {
        "vnd.docker.reference.type": "attestation-manifest",
        "vnd.docker.reference.digest": fake_digest(1),
    }
    registry.put_manifest(REPO, index(attestation), tags=("tag",))
    async with client_for(registry) as client:
        with pytest.raises(InvalidManifest) as caught:
            await client.resolve(f"{HOST}/{REPO}:tag")
    assert str(caught.value) == f"registry {HOST}: index lists no runnable images: {REPO}:tag"


async def test_empty_index_has_no_runnable_images(registry: FakeRegistry) -> None:
    registry.put_manifest(REPO, index(), tags=("tag",))
    async with client_for(registry) as client:
        with pytest.raises(InvalidManifest, match="no runnable images"):
            await client.resolve(f"{HOST}/{REPO}:tag")


# -- verification --------------------------------------------------------------------------------


async def test_wrong_bytes_for_a_digest_reference(registry: FakeRegistry) -> None:
    real = fixture("regclient_oci_index_arm_v6_v7.json")
    wanted = digest_of(real)
    tampered = real.replace(b'"arm64"', b'"s390x"')
    registry.manifests[(REPO, wanted)] = (tampered, OCI_INDEX, wanted)
    async with client_for(registry) as client:
        with pytest.raises(DigestMismatch) as caught:
            await client.resolve(f"{HOST}/{REPO}@{wanted}")
    assert str(caught.value) == (
        f"registry {HOST}: manifest digest mismatch: expected {wanted}, "
        f"got {digest_of(tampered)}: {REPO}@{wanted}"
    )


async def test_digest_reference_is_verified_even_if_the_header_agrees(
    registry: FakeRegistry,
) -> None:
    real = fixture("regclient_oci_index_arm_v6_v7.json")
    wanted = digest_of(real)
    registry.manifests[(REPO, wanted)] = (real + b"\n", OCI_INDEX, wanted)
    async with client_for(registry) as client:
        with pytest.raises(DigestMismatch):
            await client.resolve(f"{HOST}/{REPO}@{wanted}")


async def test_tag_with_a_wrong_docker_content_digest(registry: FakeRegistry) -> None:
    registry.put_manifest(
        REPO,
        fixture("regclient_oci_index_arm_v6_v7.json"),
        tags=("tag",),
        digest=fake_digest(7),
    )
    async with client_for(registry) as client:
        with pytest.raises(DigestMismatch, match=f"expected {fake_digest(7)}"):
            await client.resolve(f"{HOST}/{REPO}:tag")


async def test_tag_without_docker_content_digest_uses_the_computed_digest(
    registry: FakeRegistry,
) -> None:
    raw = fixture("regclient_oci_index_arm_v6_v7.json")

    def no_digest(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": OCI_INDEX}, content=raw)

    registry.intercept = no_digest
    async with client_for(registry) as client:
        answer = await client.resolve(f"{HOST}/{REPO}:tag")
    assert answer.digest == digest_of(raw)


async def test_content_type_contradicting_the_media_type(registry: FakeRegistry) -> None:
    registry.put_manifest(
        REPO, fixture("regclient_oci_index_arm_v6_v7.json"), tags=("tag",), content_type=DOCKER_LIST
    )
    async with client_for(registry) as client:
        with pytest.raises(InvalidManifest) as caught:
            await client.resolve(f"{HOST}/{REPO}:tag")
    assert not isinstance(caught.value, DigestMismatch)
    assert str(caught.value) == (
        f"registry {HOST}: Content-Type {DOCKER_LIST} contradicts the document's mediaType "
        f"{OCI_INDEX}: {REPO}:tag"
    )


async def test_not_json_is_invalid_manifest(registry: FakeRegistry) -> None:
    registry.put_manifest(REPO, b"<html>", tags=("tag",), content_type=OCI_INDEX)
    async with client_for(registry) as client:
        with pytest.raises(InvalidManifest, match="manifest is not valid JSON"):
            await client.resolve(f"{HOST}/{REPO}:tag")


async def test_oversize_manifest_with_content_length_is_refused_unread(
    registry: FakeRegistry,
) -> None:
    chunks_read = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal chunks_read
        for _ in range(80):
            chunks_read += 1
            yield b" " * 65536

    def huge(request: httpx.Request) -> httpx.Response:
        size = str(80 * 65536)
        return httpx.Response(
            200, headers={"Content-Type": OCI_INDEX, "Content-Length": size}, content=body()
        )

    registry.intercept = huge
    async with client_for(registry) as client:
        with pytest.raises(ManifestTooLarge) as caught:
            await client.resolve(f"{HOST}/{REPO}:tag")
    assert str(caught.value) == (
        f"registry {HOST}: document of {80 * 65536} bytes exceeds the {4 * 1024 * 1024}-byte cap: "
        f"{REPO}:tag"
    )
    assert chunks_read == 0


async def test_oversize_streamed_manifest_stops_at_the_cap(registry: FakeRegistry) -> None:
    chunks_read = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal chunks_read
        for _ in range(1000):  # 64 MiB if read to the end
            chunks_read += 1
            yield b" " * 65536

    def huge(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": OCI_INDEX}, content=body())

    registry.intercept = huge
    async with client_for(registry) as client:
        with pytest.raises(ManifestTooLarge, match="exceeds the 4194304-byte cap"):
            await client.resolve(f"{HOST}/{REPO}:tag")
    assert 64 < chunks_read <= 66


async def test_manifest_of_exactly_the_cap_is_accepted(registry: FakeRegistry) -> None:
    raw = fixture("regclient_oci_index_arm_v6_v7.json")
    registry.put_manifest(REPO, raw, tags=("tag",))
    async with client_for(registry, manifest_max_bytes=len(raw)) as client:
        answer = await client.resolve(f"{HOST}/{REPO}:tag")
    assert len(answer.platforms) == 4
    registry.requests.clear()
    async with client_for(registry, manifest_max_bytes=len(raw) - 1) as client:
        with pytest.raises(ManifestTooLarge):
            await client.resolve(f"{HOST}/{REPO}:tag")


# -- errors --------------------------------------------------------------------------------------


async def test_unknown_tag_message(registry: FakeRegistry) -> None:
    async with client_for(registry) as client:
        with pytest.raises(ImageNotFound) as caught:
            await client.resolve(f"{HOST}/{REPO}:tag")
    assert str(caught.value) == f"registry {HOST}: manifest unknown: {REPO}:tag"
    assert caught.value.registry == HOST
    assert caught.value.subject == f"{REPO}:tag"


async def test_plain_text_404_is_not_found(registry: FakeRegistry) -> None:
    registry.intercept = lambda r: httpx.Response(404, text="404 page not found")
    async with client_for(registry) as client:
        with pytest.raises(ImageNotFound) as caught:
            await client.resolve(f"{HOST}/{REPO}:tag")
    assert str(caught.value) == f"registry {HOST}: not found: {REPO}:tag"


async def test_name_unknown(registry: FakeRegistry) -> None:
    registry.intercept = lambda r: httpx.Response(
        404, content=error_body("NAME_UNKNOWN", "repository name not known to registry")
    )
    async with client_for(registry) as client:
        with pytest.raises(ImageNotFound, match=f"repository unknown: {REPO}:tag$"):
            await client.resolve(f"{HOST}/{REPO}:tag")


async def test_403_is_access_denied(registry: FakeRegistry) -> None:
    registry.intercept = lambda r: httpx.Response(403)
    async with client_for(registry) as client:
        with pytest.raises(AccessDenied) as caught:
            await client.resolve(f"{HOST}/{REPO}:tag")
    assert str(caught.value) == f"registry {HOST}: access denied: {REPO}:tag"


# -- retries -------------------------------------------------------------------------------------


def sequence(registry: FakeRegistry, *answers: httpx.Response) -> None:
    """Answer the first requests with ``answers``, then serve normally."""
    pending = list(answers)
    registry.intercept = lambda request: pending.pop(0) if pending else None


async def test_429_with_retry_after_then_success(
    registry: FakeRegistry, no_real_sleep: list[float]
) -> None:
    registry.put_manifest(REPO, fixture("regclient_oci_index_arm_v6_v7.json"), tags=("tag",))
    sequence(registry, httpx.Response(429, headers={"Retry-After": "1"}, text="slow down"))
    async with client_for(registry) as client:
        answer = await client.resolve(f"{HOST}/{REPO}:tag")
    assert len(answer.platforms) == 4
    assert no_real_sleep == [1.0]
    assert registry.count("GET", "/manifests/") == 2


async def test_429_with_a_long_retry_after_fails_at_once(
    registry: FakeRegistry, no_real_sleep: list[float]
) -> None:
    body = error_body("TOOMANYREQUESTS", "You have reached your pull rate limit.")
    registry.intercept = lambda r: httpx.Response(
        429, headers={"Retry-After": "3600"}, content=body
    )
    async with client_for(registry, max_retry_after=10.0) as client:
        with pytest.raises(RateLimited) as caught:
            await client.resolve(f"{HOST}/{REPO}:tag")
    assert caught.value.retry_after == 3600.0
    assert str(caught.value) == (
        f"registry {HOST}: rate limited (HTTP 429), retry after 3600s: {REPO}:tag"
    )
    assert len(registry.requests) == 1
    assert no_real_sleep == []


async def test_429_without_retry_after_backs_off_then_gives_up(
    registry: FakeRegistry, no_real_sleep: list[float]
) -> None:
    registry.intercept = lambda r: httpx.Response(429, text="not json")
    async with client_for(registry, max_retries=2, backoff=0.5) as client:
        with pytest.raises(RateLimited) as caught:
            await client.resolve(f"{HOST}/{REPO}:tag")
    assert caught.value.retry_after is None
    assert len(registry.requests) == 3
    assert len(no_real_sleep) == 2
    # Exponential with jitter in [0.5, 1.5): 0.5 * 2**n * jitter.
    assert 0.25 <= no_real_sleep[0] < 0.75
    assert 0.5 <= no_real_sleep[1] < 1.5


@pytest.mark.parametrize("max_retries", [0, 1, 3])
async def test_repeated_500_is_a_server_error_after_the_retries(
    registry: FakeRegistry, no_real_sleep: list[float], max_retries: int
) -> None:
    body = error_body("UNKNOWN", "boom")
    registry.intercept = lambda r: httpx.Response(500, content=body)
    async with client_for(registry, max_retries=max_retries) as client:
        with pytest.raises(RegistryServerError) as caught:
            await client.resolve(f"{HOST}/{REPO}:tag")
    assert len(registry.requests) == max_retries + 1
    assert len(no_real_sleep) == max_retries
    assert caught.value.status == 500
    assert str(caught.value) == f"registry {HOST}: HTTP 500 UNKNOWN (boom): {REPO}:tag"


async def test_503_then_success(registry: FakeRegistry) -> None:
    registry.put_manifest(REPO, fixture("regclient_oci_index_arm_v6_v7.json"), tags=("tag",))
    sequence(registry, httpx.Response(503), httpx.Response(502))
    async with client_for(registry, max_retries=2) as client:
        answer = await client.resolve(f"{HOST}/{REPO}:tag")
    assert len(answer.platforms) == 4
    assert len(registry.requests) == 3


async def test_other_statuses_are_not_retried(registry: FakeRegistry) -> None:
    registry.intercept = lambda r: httpx.Response(418)
    async with client_for(registry) as client:
        with pytest.raises(RegistryServerError, match="HTTP 418"):
            await client.resolve(f"{HOST}/{REPO}:tag")
    assert len(registry.requests) == 1


# -- authentication ------------------------------------------------------------------------------

AUTH_HOST = "auth.test"
REALM = f"https://{AUTH_HOST}/token"


class TokenServer:
    """Bearer auth in front of a FakeRegistry: tokens are scoped to one repository."""

    def __init__(self, registry: FakeRegistry, *, expires_in: int | None = 300) -> None:
        self.registry = registry
        self.expires_in = expires_in
        self.issued = 0
        self.valid: dict[str, str] = {}  # token -> scope
        self.reject_all_with: str | None = None
        self.token_requests: list[httpx.Request] = []
        registry.intercept = self.intercept

    def challenge(self, scope: str, error: str | None = None) -> httpx.Response:
        header = f'Bearer realm="{REALM}",service="{HOST}",scope="{scope}"'
        if error:
            header += f',error="{error}"'
        return httpx.Response(401, headers={"WWW-Authenticate": header})

    def intercept(self, request: httpx.Request) -> httpx.Response | None:
        if request.url.host == AUTH_HOST:
            return self.token(request)
        repo = request.url.path.removeprefix("/v2/").rsplit("/", 2)[0]
        scope = f"repository:{repo}:pull"
        authorization = request.headers.get("authorization", "")
        if not authorization.startswith("Bearer "):
            return self.challenge(scope)
        token = authorization.removeprefix("Bearer ")
        if self.reject_all_with is not None:
            return self.challenge(scope, self.reject_all_with)
        if token not in self.valid:
            return self.challenge(scope, "invalid_token")
        if self.valid[token] != scope:
            return self.challenge(scope, "insufficient_scope")
        return None

    def token(self, request: httpx.Request) -> httpx.Response:
        self.token_requests.append(request)
        if request.method == "POST":
            form = urllib.parse.parse_qs(request.content.decode())
            scope = form["scope"][0]
        else:
            scope = request.url.params["scope"]
        self.issued += 1
        token = f"token-{self.issued}"
        self.valid[token] = scope
        body: dict[str, Any] = {"token": token}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return httpx.Response(200, json=body)


async def test_bearer_token_flow_and_pre_authentication(registry: FakeRegistry) -> None:
    raw = fixture("regclient_oci_index_arm_v6_v7.json")
    registry.put_manifest("team/a", raw, tags=("1",))
    registry.put_manifest("team/b", raw, tags=("1",))
    server = TokenServer(registry)
    async with client_for(registry) as client:
        await client.resolve(f"{HOST}/team/a:1")
        assert requests_summary(registry) == [
            f"GET {HOST}/v2/team/a/manifests/1",
            f"GET {AUTH_HOST}/token",
            f"GET {HOST}/v2/team/a/manifests/1",
        ]
        token_request = server.token_requests[0]
        assert token_request.url.params.get_list("service") == [HOST]
        assert token_request.url.params.get_list("scope") == ["repository:team/a:pull"]
        assert "authorization" not in token_request.headers  # anonymous
        assert registry.requests[2].headers["authorization"] == "Bearer token-1"

        # A second repository on the same host authenticates up front: no 401.
        registry.requests.clear()
        answer = await client.resolve(f"{HOST}/team/b:1")
        assert len(answer.platforms) == 4
        assert requests_summary(registry) == [
            f"GET {AUTH_HOST}/token",
            f"GET {HOST}/v2/team/b/manifests/1",
        ]
        assert server.token_requests[1].url.params.get_list("scope") == ["repository:team/b:pull"]

        # The first repository's token is still cached.
        registry.requests.clear()
        await client.resolve(f"{HOST}/team/a:1")
        assert requests_summary(registry) == [f"GET {HOST}/v2/team/a/manifests/1"]


async def test_basic_credentials_are_sent_to_the_token_realm(registry: FakeRegistry) -> None:
    registry.put_manifest("team/a", fixture("regclient_oci_index_arm_v6_v7.json"), tags=("1",))
    server = TokenServer(registry)
    creds = CredentialStore({HOST: Credential(username="alice", password="pw")})
    async with client_for(registry, creds) as client:
        await client.resolve(f"{HOST}/team/a:1")
    assert server.token_requests[0].headers["authorization"] == (
        "Basic " + base64.b64encode(b"alice:pw").decode()
    )


async def test_invalid_token_on_a_cached_token_refetches_once(registry: FakeRegistry) -> None:
    registry.put_manifest("team/a", fixture("regclient_oci_index_arm_v6_v7.json"), tags=("1",))
    server = TokenServer(registry)
    async with client_for(registry) as client:
        await client.resolve(f"{HOST}/team/a:1")
        server.valid.clear()  # the server forgets its tokens (restart, key rotation)
        registry.requests.clear()
        answer = await client.resolve(f"{HOST}/team/a:1")
    assert len(answer.platforms) == 4
    assert requests_summary(registry) == [
        f"GET {HOST}/v2/team/a/manifests/1",
        f"GET {AUTH_HOST}/token",
        f"GET {HOST}/v2/team/a/manifests/1",
    ]
    assert registry.requests[0].headers["authorization"] == "Bearer token-1"
    assert registry.requests[2].headers["authorization"] == "Bearer token-2"


async def test_persistent_invalid_token_refetches_only_once(registry: FakeRegistry) -> None:
    registry.put_manifest("team/a", fixture("regclient_oci_index_arm_v6_v7.json"), tags=("1",))
    server = TokenServer(registry)
    async with client_for(registry) as client:
        await client.resolve(f"{HOST}/team/a:1")
        server.reject_all_with = "invalid_token"
        registry.requests.clear()
        with pytest.raises(AuthenticationFailed):
            await client.resolve(f"{HOST}/team/a:1")
    assert len(server.token_requests) == 2  # the first flow's token plus exactly one refetch
    assert registry.count("GET", "/manifests/") == 2


async def test_persistent_invalid_token_fails(registry: FakeRegistry) -> None:
    registry.put_manifest("team/a", fixture("regclient_oci_index_arm_v6_v7.json"), tags=("1",))
    server = TokenServer(registry)
    server.reject_all_with = "invalid_token"
    async with client_for(registry) as client:
        with pytest.raises(AuthenticationFailed) as caught:
            await client.resolve(f"{HOST}/team/a:1")
    assert str(caught.value) == (
        f"registry {HOST}: unauthorized (no credentials for this registry): team/a:1"
    )
    assert len(registry.requests) < 10


async def test_insufficient_scope_is_access_denied(registry: FakeRegistry) -> None:
    server = TokenServer(registry)
    server.reject_all_with = "insufficient_scope"
    async with client_for(registry) as client:
        with pytest.raises(AccessDenied, match=r"insufficient scope: team/a:1$"):
            await client.resolve(f"{HOST}/team/a:1")


async def test_token_without_expires_in_is_cached_for_the_default(registry: FakeRegistry) -> None:
    registry.put_manifest("team/a", fixture("regclient_oci_index_arm_v6_v7.json"), tags=("1",))
    TokenServer(registry, expires_in=None)
    async with client_for(registry) as client:
        await client.resolve(f"{HOST}/team/a:1")
        await client.resolve(f"{HOST}/team/a:1")
    assert registry.count("GET", "/token") == 1


async def test_identity_token_is_posted_to_the_realm(registry: FakeRegistry) -> None:
    registry.put_manifest("team/a", fixture("regclient_oci_index_arm_v6_v7.json"), tags=("1",))
    server = TokenServer(registry)
    creds = CredentialStore({HOST: Credential(identity_token="refresh-xyz")})
    async with client_for(registry, creds) as client:
        answer = await client.resolve(f"{HOST}/team/a:1")
    assert len(answer.platforms) == 4
    [token_request] = server.token_requests
    assert token_request.method == "POST"
    assert str(token_request.url) == REALM
    assert token_request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = urllib.parse.parse_qs(token_request.content.decode())
    assert form == {
        "grant_type": ["refresh_token"],
        "refresh_token": ["refresh-xyz"],
        "service": [HOST],
        "scope": ["repository:team/a:pull"],
        "client_id": ["archwarden"],
    }
    assert registry.count("GET", "/token") == 0


async def test_registry_token_is_sent_as_bearer(registry: FakeRegistry) -> None:
    registry.put_manifest("team/a", fixture("regclient_oci_index_arm_v6_v7.json"), tags=("1",))

    def only_static(request: httpx.Request) -> httpx.Response | None:
        if request.headers.get("authorization") != "Bearer static-123":
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="x"'})
        return None

    registry.intercept = only_static
    creds = CredentialStore({HOST: Credential(registry_token="static-123")})
    async with client_for(registry, creds) as client:
        await client.resolve(f"{HOST}/team/a:1")
    assert len(registry.requests) == 1


def basic_auth(registry: FakeRegistry, user: str, password: str) -> None:
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def check(request: httpx.Request) -> httpx.Response | None:
        if request.url.host != HOST:
            return None
        if request.headers.get("authorization") != expected:
            return httpx.Response(401, headers={"WWW-Authenticate": f'Basic realm="{HOST}"'})
        return None

    registry.intercept = check


async def test_basic_auth_flow(registry: FakeRegistry) -> None:
    registry.put_manifest("team/a", fixture("regclient_oci_index_arm_v6_v7.json"), tags=("1",))
    registry.put_manifest("team/b", fixture("regclient_oci_index_arm_v6_v7.json"), tags=("1",))
    basic_auth(registry, "alice", "pw")
    creds = CredentialStore({HOST: Credential(username="alice", password="pw")})
    async with client_for(registry, creds) as client:
        await client.resolve(f"{HOST}/team/a:1")
        assert [r.headers.get("authorization") is not None for r in registry.requests] == [
            False,
            True,
        ]
        registry.requests.clear()
        await client.resolve(f"{HOST}/team/b:1")
        assert len(registry.requests) == 1  # pre-authenticated


async def test_basic_challenge_without_credentials(registry: FakeRegistry) -> None:
    basic_auth(registry, "alice", "pw")
    async with client_for(registry) as client:
        with pytest.raises(AuthenticationFailed) as caught:
            await client.resolve(f"{HOST}/team/a:1")
    assert str(caught.value) == (
        f"registry {HOST}: unauthorized and no credentials for it: team/a:1"
    )


async def test_wrong_basic_credentials(registry: FakeRegistry) -> None:
    basic_auth(registry, "alice", "pw")
    creds = CredentialStore({HOST: Credential(username="alice", password="wrong")})
    async with client_for(registry, creds) as client:
        with pytest.raises(AuthenticationFailed) as caught:
            await client.resolve(f"{HOST}/team/a:1")
    assert "wrong" not in str(caught.value)
    assert str(caught.value) == (
        f"registry {HOST}: unauthorized: the registry rejected the credentials: team/a:1"
    )
    assert len(registry.requests) == 2


async def test_credentials_never_reach_a_mirror_on_another_host(registry: FakeRegistry) -> None:
    registry.put_manifest("team/a", fixture("regclient_oci_index_arm_v6_v7.json"), tags=("1",))
    basic_auth(registry, "alice", "pw")
    inner = registry.intercept
    assert inner is not None

    def mirror_wants_auth(request: httpx.Request) -> httpx.Response | None:
        if request.url.host == "mirror.test":
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="mirror"'})
        return inner(request)

    registry.intercept = mirror_wants_auth
    creds = CredentialStore({HOST: Credential(username="alice", password="pw")})
    settings = RegistrySettings(mirrors=("mirror.test",))
    async with client_for(registry, creds, registry_settings=settings) as client:
        answer = await client.resolve(f"{HOST}/team/a:1")
    assert len(answer.platforms) == 4
    mirror_requests = [r for r in registry.requests if r.url.host == "mirror.test"]
    assert mirror_requests
    assert all("authorization" not in r.headers for r in mirror_requests)
    assert any("authorization" in r.headers for r in registry.requests if r.url.host == HOST)


async def test_a_mirror_that_has_the_image_is_used_first(registry: FakeRegistry) -> None:
    raw = fixture("regclient_oci_index_arm_v6_v7.json")
    mirror = FakeRegistry("mirror.test")
    mirror.put_manifest("team/a", raw, tags=("1",))

    def route(request: httpx.Request) -> httpx.Response | None:
        return mirror.serve(request) if request.url.host == "mirror.test" else None

    registry.intercept = route
    settings = RegistrySettings(mirrors=("mirror.test",))
    async with client_for(registry, registry_settings=settings) as client:
        answer = await client.resolve(f"{HOST}/team/a:1")
    assert len(answer.platforms) == 4
    assert requests_summary(registry) == ["GET mirror.test/v2/team/a/manifests/1"]


async def test_redirect_to_another_host_drops_authorization(registry: FakeRegistry) -> None:
    manifest = fixture("regclient_oci_manifest_arm_v7.json")
    config = fixture("regclient_oci_config_arm_v7.json")
    registry.put_manifest("team/a", manifest, tags=("1",))
    config_digest = digest_of(config)
    basic_auth(registry, "alice", "pw")
    check = registry.intercept
    assert check is not None

    def redirect_blobs(request: httpx.Request) -> httpx.Response | None:
        if request.url.host == "storage.test":
            return httpx.Response(200, content=config)
        denied = check(request)
        if denied is not None:
            return denied
        if "/blobs/" in request.url.path:
            return httpx.Response(
                307, headers={"Location": f"https://storage.test/s3/{config_digest}?sig=abc"}
            )
        return None

    registry.intercept = redirect_blobs
    creds = CredentialStore({HOST: Credential(username="alice", password="pw")})
    async with client_for(registry, creds) as client:
        answer = await client.resolve(f"{HOST}/team/a:1")
    assert answer.platforms == ps("linux/arm/v7")
    [storage] = [r for r in registry.requests if r.url.host == "storage.test"]
    assert "authorization" not in storage.headers
    assert storage.url.params["sig"] == "abc"
    blob_request = next(r for r in registry.requests if "/blobs/" in r.url.path)
    assert blob_request.headers["authorization"].startswith("Basic ")


async def test_redirect_loops_are_capped(registry: FakeRegistry) -> None:
    registry.intercept = lambda r: httpx.Response(
        302, headers={"Location": f"https://{HOST}/elsewhere"}
    )
    async with client_for(registry, max_redirects=3) as client:
        with pytest.raises(RegistryServerError, match="more than 3 redirects"):
            await client.resolve(f"{HOST}/team/a:1")
    assert len(registry.requests) == 4


async def test_head_manifest(registry: FakeRegistry) -> None:
    raw = fixture("regclient_oci_index_arm_v6_v7.json")
    registry.put_manifest(REPO, raw, tags=("tag",))
    async with client_for(registry) as client:
        head = await client.head_manifest(reference.parse(f"{HOST}/{REPO}:tag"))
        missing = await client.head_manifest(reference.parse(f"{HOST}/{REPO}:nope"))
    assert head is not None
    assert (head.digest, head.media_type, head.size) == (digest_of(raw), OCI_INDEX, len(raw))
    assert missing is None
    assert [r.method for r in registry.requests] == ["HEAD", "HEAD"]
