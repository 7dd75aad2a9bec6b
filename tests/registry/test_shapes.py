"""Every image shape, resolved from a real distribution 2.8 in each of its four modes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from archwarden import reference, registry
from tests.registry.helpers import client_for
from tests.support.images import Seeder, unique_repo
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.registry

MODES = ["plain_registry", "tls_registry", "basic_registry", "token_registry"]


@pytest.fixture(params=MODES)
def server(request: pytest.FixtureRequest) -> RegistryServer:
    value: RegistryServer = request.getfixturevalue(request.param)
    return value


@pytest.fixture
def seeder(server: RegistryServer, seeder_for: Callable[[Any], Seeder]) -> Seeder:
    return seeder_for(server)


async def resolve(server: RegistryServer, ref: str, **kwargs: object) -> registry.ImagePlatforms:
    async with client_for(server, **kwargs) as client:
        return await client.resolve(f"{server.host}/{ref}")


async def test_oci_index_with_attestations(server: RegistryServer, seeder: Seeder) -> None:
    repo = unique_repo("oci")
    index = seeder.push_multiarch(
        repo, "1.0", ["linux/amd64", "linux/arm64", "linux/arm/v7"], attestations=True
    )
    answer = await resolve(server, f"{repo}:1.0")
    assert answer.canonical == ["linux/amd64", "linux/arm/v7", "linux/arm64"]
    assert answer.digest == index.digest
    assert answer.media_type == "application/vnd.oci.image.index.v1+json"


async def test_docker_manifest_list(server: RegistryServer, seeder: Seeder) -> None:
    repo = unique_repo("list")
    index = seeder.push_multiarch(repo, "v2", ["linux/amd64", "linux/ppc64le"], fmt="docker")
    answer = await resolve(server, f"{repo}:v2")
    assert answer.canonical == ["linux/amd64", "linux/ppc64le"]
    assert answer.digest == index.digest
    assert answer.media_type == "application/vnd.docker.distribution.manifest.list.v2+json"


async def test_single_arch_oci_reads_the_config_blob(
    server: RegistryServer, seeder: Seeder
) -> None:
    # The peers' classic mistake is reporting any single-arch image as amd64.
    repo = unique_repo("single")
    image = seeder.push_image(repo, "arm", "linux/arm/v7")
    answer = await resolve(server, f"{repo}:arm")
    assert answer.canonical == ["linux/arm/v7"]
    assert answer.digest == image.digest


async def test_an_oci_artifact_names_no_platform(server: RegistryServer, seeder: Seeder) -> None:
    # What an image volume may mount: OCI 1.1's empty config plus artifactType, or (older
    # tools) only a config type of its own. Neither is read as an image config.
    repo = unique_repo("artifact")
    artifact = seeder.push_artifact(repo, "1", {"model.bin": b"weights"})
    helm = seeder.push_artifact(
        repo, "chart", {"c.tgz": b"x"}, artifact_type=None,
        config_type="application/vnd.cncf.helm.config.v1+json",
    )  # fmt: skip
    answer = await resolve(server, f"{repo}:1")
    assert answer.platforms == ()
    assert answer.artifact_type == "application/vnd.archwarden.test.data.v1"
    assert answer.digest == artifact.digest
    assert answer.to_json()["artifactType"] == "application/vnd.archwarden.test.data.v1"
    chart = await resolve(server, f"{repo}:chart")
    assert (chart.platforms, chart.artifact_type) == (
        (),
        "application/vnd.cncf.helm.config.v1+json",
    )
    assert chart.digest == helm.digest
    # An image's config still decides for it.
    seeder.push_image(repo, "image", "linux/arm64")
    image = await resolve(server, f"{repo}:image")
    assert (image.canonical, image.artifact_type) == (["linux/arm64"], "")


async def test_an_index_of_artifacts_alone_has_no_runnable_image(
    server: RegistryServer, seeder: Seeder
) -> None:
    repo = unique_repo("artifacts")
    artifact = seeder.push_artifact(repo, None, {"a": b"1"})
    seeder.push_index(repo, "1", [(artifact, None)])
    with pytest.raises(registry.InvalidManifest, match="index lists no runnable images"):
        await resolve(server, f"{repo}:1")
    # Beside images, an artifact entry with no platform is left out.
    amd64 = seeder.push_image(repo, None, "linux/amd64")
    seeder.push_index(repo, "2", [(artifact, None), (amd64, "linux/amd64")])
    assert (await resolve(server, f"{repo}:2")).canonical == ["linux/amd64"]


async def test_single_arch_docker_schema2_arm64(server: RegistryServer, seeder: Seeder) -> None:
    repo = unique_repo("schema2")
    seeder.push_image(repo, "1", {"os": "linux", "architecture": "aarch64"}, fmt="docker")
    answer = await resolve(server, f"{repo}:1")
    assert answer.canonical == ["linux/arm64"]


async def test_windows_image_keeps_os_version(server: RegistryServer, seeder: Seeder) -> None:
    repo = unique_repo("win")
    seeder.push_image(repo, "ltsc2022", "windows/amd64:10.0.20348.1129", fmt="docker")
    answer = await resolve(server, f"{repo}:ltsc2022")
    assert answer.canonical == ["windows/amd64"]
    assert [p.os_version for p in answer.platforms] == ["10.0.20348.1129"]
    assert answer.to_json()["platformDetails"] == [
        {"os": "windows", "architecture": "amd64", "os.version": "10.0.20348.1129"}
    ]


async def test_nested_index_without_platform_is_fetched(
    server: RegistryServer, seeder: Seeder
) -> None:
    repo = unique_repo("nested")
    inner = seeder.push_multiarch(repo, None, ["linux/s390x", "linux/arm64"])  # by digest
    ppc = seeder.push_image(repo, None, "linux/ppc64le")
    outer = seeder.push_index(repo, "nested", [(ppc, ppc.platform), (inner, None)])
    answer = await resolve(server, f"{repo}:nested")
    assert answer.canonical == ["linux/arm64", "linux/ppc64le", "linux/s390x"]
    assert answer.digest == outer.digest


async def test_by_digest_and_tag_plus_digest_resolve_the_digest(
    server: RegistryServer, seeder: Seeder
) -> None:
    repo = unique_repo("digest")
    amd = seeder.push_image(repo, "moving", "linux/amd64")
    arm = seeder.push_image(repo, "other", "linux/arm64")
    by_digest = await resolve(server, f"{repo}@{arm.digest}")
    assert by_digest.canonical == ["linux/arm64"]
    # The tag says amd64, the digest says arm64: the digest wins, the tag is kept for display.
    both = await resolve(server, f"{repo}:moving@{arm.digest}")
    assert both.canonical == ["linux/arm64"]
    assert both.reference.tag == "moving"
    assert both.digest == arm.digest != amd.digest


async def test_missing_tag_names_registry_repository_and_reference(
    server: RegistryServer, seeder: Seeder
) -> None:
    repo = unique_repo("missing")
    seeder.push_image(repo, "1", "linux/amd64")
    with pytest.raises(registry.ImageNotFound) as caught:
        await resolve(server, f"{repo}:9.9")
    assert str(caught.value) == f"registry {server.host}: manifest unknown: {repo}:9.9"


async def test_unknown_repository(server: RegistryServer) -> None:
    with pytest.raises(registry.ImageNotFound) as caught:
        await resolve(server, "nobody/home:1")
    assert str(caught.value).startswith(f"registry {server.host}: ")
    assert str(caught.value).endswith("nobody/home:1")


async def test_reference_parsing_feeds_the_client(server: RegistryServer, seeder: Seeder) -> None:
    repo = unique_repo("ref")
    seeder.push_image(repo, "latest", "linux/amd64")
    async with client_for(server) as client:
        answer = await client.resolve(reference.parse(f"{server.host}/{repo}"))
    assert answer.reference.tag == "latest"
    assert answer.canonical == ["linux/amd64"]
