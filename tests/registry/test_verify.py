"""Images that lie: index entries checked against their configs on a real distribution 2.8."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from archwarden import registry
from tests.registry.helpers import client_for
from tests.registry.test_inspect_cli import run_cli
from tests.support.images import Format, Seeder, unique_repo
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.registry


@pytest.fixture
def seeder(plain_registry: RegistryServer, seeder_for: Callable[[Any], Seeder]) -> Seeder:
    return seeder_for(plain_registry)


async def verify(server: RegistryServer, ref: str, **kwargs: object) -> registry.Verification:
    async with client_for(server, **kwargs) as client:
        return await client.verify(f"{server.host}/{ref}")


async def test_an_amd64_build_listed_as_arm64_is_reported(
    plain_registry: RegistryServer, seeder: Seeder
) -> None:
    repo = unique_repo("lie")
    index = seeder.push_mislabelled(
        repo, "1", [("linux/amd64", "linux/amd64"), ("linux/arm64", "linux/amd64")]
    )
    checked = await verify(plain_registry, f"{repo}:1")
    assert checked.digest == index.digest
    lying = index.children[1].digest
    assert [(e.digest, e.declared.canonical, e.actual.canonical) for e in checked.mismatches] == [
        (lying, "linux/arm64", "linux/amd64")
    ]
    assert len(checked.entries) == 2
    # Resolution trusts the index (as containerd does): it still says arm64.
    async with client_for(plain_registry) as client:
        resolved = await client.resolve(f"{plain_registry.host}/{repo}:1")
    assert resolved.canonical == ["linux/amd64", "linux/arm64"]


@pytest.mark.parametrize("fmt", ["oci", "docker"])
async def test_an_honest_index_has_no_mismatch(
    plain_registry: RegistryServer, seeder: Seeder, fmt: Format
) -> None:
    repo = unique_repo("honest")
    seeder.push_multiarch(
        repo,
        "1",
        ["linux/amd64", "linux/arm64", "linux/arm/v7"],
        fmt=fmt,
        attestations=fmt == "oci",
    )
    checked = await verify(plain_registry, f"{repo}:1")
    assert sorted(e.declared.canonical for e in checked.entries) == [
        "linux/amd64",
        "linux/arm/v7",
        "linux/arm64",
    ]
    assert checked.mismatches == ()


async def test_variants_count_only_when_both_sides_name_one(
    plain_registry: RegistryServer, seeder: Seeder
) -> None:
    repo = unique_repo("variant")
    seeder.push_mislabelled(
        repo,
        "1",
        [
            ("linux/arm/v6", "linux/arm/v7"),  # both name a variant, and they differ: a lie
            ("linux/arm/v7", {"os": "linux", "architecture": "arm"}),  # config names none
            ("linux/arm64/v8", "linux/arm64"),  # v8 is arm64's default: the same
        ],
    )
    checked = await verify(plain_registry, f"{repo}:1")
    assert [(e.declared.canonical, e.actual.canonical) for e in checked.mismatches] == [
        ("linux/arm/v6", "linux/arm/v7")
    ]
    assert len(checked.entries) == 3


async def test_one_digest_listed_under_two_platforms_is_fetched_once(
    plain_registry: RegistryServer, seeder: Seeder
) -> None:
    repo = unique_repo("twice")
    image = seeder.push_image(repo, None, "linux/amd64")
    seeder.push_index(repo, "1", [(image, "linux/amd64"), (image, "linux/arm64")])
    requests: list[str] = []
    async with client_for(
        plain_registry, observer=lambda host, code, _t: requests.append(code)
    ) as client:
        checked = await client.verify(f"{plain_registry.host}/{repo}:1")
    assert [e.agrees for e in checked.entries] == [True, False]
    assert len(requests) == 3  # the index, the child manifest once, its config once


async def test_a_single_image_and_a_nested_index(
    plain_registry: RegistryServer, seeder: Seeder
) -> None:
    repo = unique_repo("nested")
    single = seeder.push_image(repo, "single", "linux/s390x")
    assert (await verify(plain_registry, f"{repo}:single")).entries == ()
    inner = seeder.push_mislabelled(repo, "inner", [("linux/ppc64le", "linux/s390x")])
    seeder.push_index(repo, "outer", [(inner, None), (single, "linux/s390x")])
    checked = await verify(plain_registry, f"{repo}:outer")
    assert sorted((e.declared.canonical, e.agrees) for e in checked.entries) == [
        ("linux/ppc64le", False),
        ("linux/s390x", True),
    ]


async def test_limits_hold_and_failures_are_registry_errors(
    plain_registry: RegistryServer, seeder: Seeder
) -> None:
    repo = unique_repo("bounded")
    index = seeder.push_mislabelled(repo, "1", [("linux/amd64", "linux/amd64")])
    # The seeder's configs are a few hundred bytes: a 64-byte cap refuses them.
    with pytest.raises(registry.ManifestTooLarge, match="64-byte cap"):
        await verify(plain_registry, f"{repo}:1", config_max_bytes=64)
    # A budget that a resolution (the index alone) fits in, and the verification does not.
    budget = index.size + 16
    async with client_for(plain_registry, resolution_max_bytes=budget) as client:
        await client.resolve(f"{plain_registry.host}/{repo}:1")
    with pytest.raises(registry.ManifestTooLarge, match=f"{budget}-byte budget"):
        await verify(plain_registry, f"{repo}:1", resolution_max_bytes=budget)
    with pytest.raises(registry.ImageNotFound):
        await verify(plain_registry, f"{repo}:nope")


async def test_inspect_verify_prints_one_line_per_lie_and_exits_three(
    plain_registry: RegistryServer, seeder: Seeder
) -> None:
    repo = unique_repo("cli-lie")
    lie = seeder.push_mislabelled(
        repo, "lie", [("linux/amd64", "linux/amd64"), ("linux/arm64", "linux/amd64")]
    )
    seeder.push_multiarch(repo, "honest", ["linux/amd64", "linux/arm64"])
    host = plain_registry.host
    code, _, stdout, stderr = await run_cli(
        "--verify", "--insecure-registry", host, f"{host}/{repo}:lie", f"{host}/{repo}:honest"
    )
    assert (code, stderr) == (3, "")
    lines = stdout.splitlines()
    assert [line for line in lines if line.startswith("MISMATCH")] == [
        f"MISMATCH  {host}/{repo}:lie: the index lists {lie.children[1].digest} as linux/arm64, "
        "its config says linux/amd64"
    ]
    code, data, _, _ = await run_cli(
        "--verify", "--json", "--insecure-registry", host, f"{host}/{repo}:honest"
    )
    assert code == 0 and data is not None
    assert data[0]["verification"]["mismatches"] == []
    assert len(data[0]["verification"]["entries"]) == 2
    # Without --verify the lie goes unnoticed: resolution trusts the index.
    code, _, stdout, _ = await run_cli("--insecure-registry", host, f"{host}/{repo}:lie")
    assert code == 0 and "MISMATCH" not in stdout
    # A failure wins over a mismatch: 1.
    code, _, _, stderr = await run_cli(
        "--verify", "--insecure-registry", host, f"{host}/{repo}:lie", f"{host}/{repo}:gone"
    )
    assert code == 1 and stderr.count("\n") == 1
