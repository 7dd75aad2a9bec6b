"""`archwarden inspect` as users run it: the installed console script, real registries."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests import fixtures
from tests.registry import faults
from tests.support.images import Seeder, unique_repo
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.registry

FIXTURES = fixtures.MANIFESTS
ARCHWARDEN = shutil.which("archwarden") or str(Path(__file__).parents[2] / ".venv/bin/archwarden")

SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
SCHEMA1_DIGEST = "sha256:7364fea9d84ee548ab67d4c46c6006289800c98de3fbf8c0a97138dfcc23f000"

# INDEX.md's expected sets. #4 keeps containerd's answer for non-standard variants (no rewriting
# of armv7/armv8); #14's nested index is not published anywhere, so its 404 must be an error.
EXPECTED: dict[str, list[str] | str] = {
    "regclient_oci_index_arm_v6_v7": ["linux/amd64", "linux/arm/v6", "linux/arm/v7", "linux/arm64"],
    "regclient_oci_index_unknown_builder_refs": ["linux/amd64", "linux/arm64"],
    "regclient_oci_manifest_arm_v7": ["linux/arm/v7"],
    "containers_image_docker_list_schema1_children": [
        "linux/amd64",
        "linux/arm/armv7",
        "linux/arm64/armv8",
        "linux/ppc64le",
        "linux/s390x",
    ],
    "containers_image_oci_index_arm_variants": [
        "linux/amd64",
        "linux/arm/unrecognized-present",
        "linux/arm/v6",
        "linux/arm/v7",
    ],
    "containers_image_oci_index_artifacttype_osfeatures": [
        "linux/amd64",
        "linux/arm64",
        "linux/ppc64le",
    ],
    "containers_image_schema2_httpd_amd64": ["linux/amd64"],
    "containers_image_schema1_signed": ["linux/amd64"],
    "containers_image_schema1_unsigned": ["linux/amd64"],
    "buildkit_doc_index_with_attestation": ["linux/amd64"],
    "image_spec_nested_index": "manifest unknown",
}


async def run_cli(*args: str) -> tuple[int, list[Any] | None, str, str]:
    process = await asyncio.create_subprocess_exec(
        ARCHWARDEN,
        "inspect",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    stdout, stderr = out.decode(), err.decode()
    data = json.loads(stdout) if "--json" in args and stdout.strip() else None
    assert process.returncode is not None
    return process.returncode, data, stdout, stderr


def fixture_documents() -> dict[str, tuple[bytes, str, str]]:
    """name -> (bytes, content type, digest) served for each fixture."""
    served: dict[str, tuple[bytes, str, str]] = {}
    for name in EXPECTED:
        raw = (FIXTURES / f"{name}.json").read_bytes()
        body = json.loads(raw)
        if body.get("schemaVersion") == 1:
            media = SCHEMA1_SIGNED if "signatures" in body else SCHEMA1
            digest = SCHEMA1_DIGEST
        else:
            media = body["mediaType"]
            digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        served[name] = (raw, media, digest)
    return served


async def test_inspect_reports_every_fixture() -> None:
    documents = fixture_documents()
    blobs = {}
    for config in ("containers_image_schema2_httpd_amd64_config", "regclient_oci_config_arm_v7"):
        raw = (FIXTURES / f"{config}.json").read_bytes()
        blobs["sha256:" + hashlib.sha256(raw).hexdigest()] = raw

    async def handler(request: web.Request) -> web.StreamResponse:
        parts = request.path.split("/")  # /v2/fixtures/<name>/manifests/<ref>
        if "blobs" in parts and parts[-1] in blobs:
            return web.Response(body=blobs[parts[-1]])
        if "manifests" in parts and parts[3] in documents:
            raw, media, digest = documents[parts[3]]
            if parts[-1] in ("latest", digest):
                return web.Response(
                    body=raw, headers={"Content-Type": media, "Docker-Content-Digest": digest}
                )
        return web.json_response(
            {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}, status=404
        )

    async with faults.fault_server(handler) as server:
        refs = [f"{server.host}/fixtures/{name}" for name in EXPECTED]
        code, data, _, stderr = await run_cli("--json", "--insecure-registry", server.host, *refs)
    assert data is not None
    by_name = {row["image"].split("/")[2].split(":")[0]: row for row in data}
    for name, expected in EXPECTED.items():
        row = by_name[name]
        if isinstance(expected, str):
            assert expected in row["error"], row
        else:
            assert row["platforms"] == expected, name
            assert row["digest"] == documents[name][2]
    assert by_name["containers_image_oci_index_artifacttype_osfeatures"]["platformDetails"] == [
        {"os": "linux", "architecture": "amd64", "os.features": ["sse4"]}
    ]
    # One failure (the nested index's unpublished child): exit 1, one line, no traceback.
    assert code == 1
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert stderr.startswith(f"archwarden: error: registry {server.host}: manifest unknown: ")


async def test_inspect_json_for_seeded_images_over_token_auth(
    token_registry: RegistryServer, seeder_for: Callable[[Any], Seeder], tmp_path: Path
) -> None:
    seeder = seeder_for(token_registry)
    repo = unique_repo("cli")
    multi = seeder.push_multiarch(repo, "1", ["linux/amd64", "linux/arm64", "linux/arm/v7"])
    single = seeder.push_image(repo, "arm", "linux/arm/v6")
    auth = base64.b64encode(f"{token_registry.username}:{token_registry.password}".encode())
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {token_registry.host: {"auth": auth.decode()}}}))
    host = token_registry.host
    code, data, _, stderr = await run_cli(
        "--json",
        "--docker-config",
        str(config),
        "--insecure-registry",
        host,
        f"{host}/{repo}:1",
        f"{host}/{repo}:arm",
    )
    assert (code, stderr) == (0, "")
    assert data == [
        {
            "image": f"{host}/{repo}:1",
            "digest": multi.digest,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "platforms": ["linux/amd64", "linux/arm/v7", "linux/arm64"],
        },
        {
            "image": f"{host}/{repo}:arm",
            "digest": single.digest,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "platforms": ["linux/arm/v6"],
        },
    ]


async def test_inspect_table_tls_with_ca_file(
    tls_registry: RegistryServer, seeder_for: Callable[[Any], Seeder]
) -> None:
    repo = unique_repo("tls")
    image = seeder_for(tls_registry).push_image(repo, "1", "linux/s390x")
    code, _, stdout, stderr = await run_cli(
        "--ca-file", str(tls_registry.ca_file), f"{tls_registry.host}/{repo}:1"
    )
    assert (code, stderr) == (0, "")
    lines = stdout.splitlines()
    assert lines[0].split() == ["IMAGE", "DIGEST", "PLATFORMS"]
    assert lines[1].split() == [f"{tls_registry.host}/{repo}:1", image.digest, "linux/s390x"]


async def test_inspect_names_an_artifacts_type_instead_of_platforms(
    plain_registry: RegistryServer, seeder_for: Callable[[Any], Seeder]
) -> None:
    repo = unique_repo("artifact")
    artifact = seeder_for(plain_registry).push_artifact(repo, "1", {"data": b"1"})
    image = f"{plain_registry.host}/{repo}:1"
    code, _, stdout, stderr = await run_cli("--insecure-registry", plain_registry.host, image)
    assert (code, stderr) == (0, "")
    assert stdout.splitlines()[1].split() == [
        image,
        artifact.digest,
        "none:",
        "artifact",
        "application/vnd.archwarden.test.data.v1",
    ]
    code, data, _, _ = await run_cli("--json", "--insecure-registry", plain_registry.host, image)
    assert code == 0 and data is not None
    assert (data[0]["platforms"], data[0]["artifactType"]) == (
        [],
        "application/vnd.archwarden.test.data.v1",
    )


async def test_inspect_failures_exit_one_with_one_line_each(
    plain_registry: RegistryServer, basic_registry: RegistryServer, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"auths": {"x": {"auth": "%%%"}}')
    code, _, _, stderr = await run_cli("--docker-config", str(broken), "nginx")
    assert code == 1
    assert stderr == f"archwarden: error: {broken}: docker config is not valid JSON\n"
    bad_auth = tmp_path / "bad-auth.json"
    bad_auth.write_text('{"auths": {"x.example": {"auth": "%%%"}}}')
    code, _, _, stderr = await run_cli("--docker-config", str(bad_auth), "nginx")
    assert code == 1
    assert stderr == (
        f"archwarden: error: {bad_auth}: auth for 'x.example' has no ':' between user and "
        "password\n"
    )
    assert "%%%" not in stderr

    code, data, _, stderr = await run_cli(
        "--json",
        "--insecure-registry",
        plain_registry.host,
        "--insecure-registry",
        basic_registry.host,
        "UPPER/Case:1",
        f"{plain_registry.host}/no/such:tag",
        f"{basic_registry.host}/needs/creds:1",
    )
    assert code == 1
    assert data is not None and all("error" in row for row in data)
    lines = stderr.splitlines()
    assert lines == [
        "archwarden: error: invalid image reference 'UPPER/Case:1': "
        "repository name 'Case' must be lowercase",
        f"archwarden: error: registry {plain_registry.host}: manifest unknown: no/such:tag",
        f"archwarden: error: registry {basic_registry.host}: unauthorized and no credentials "
        "for it: needs/creds:1",
    ]
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    "image", ["999.999.999.999/x:1", "0251.0376.0251.0376/x:1", "[1::2::3]/x:1", "h.test:70000/x"]
)
async def test_inspect_unusable_hosts_print_one_line(image: str) -> None:
    code, _, _, stderr = await run_cli("--timeout", "1", image)
    assert code == 1
    assert "Traceback" not in stderr
    assert len(stderr.splitlines()) == 1
    assert stderr.startswith(f"archwarden: error: invalid image reference {image!r}: ")


async def test_inspect_timeout_bounds_each_request_whole() -> None:
    # One byte a second: every read arrives well within --timeout, so only a bound on the
    # whole request ends it in seconds rather than at the lookup's 30 s deadline.
    async with faults.trickle_server(interval=1.0, lasting=40.0) as host:
        started = asyncio.get_running_loop().time()
        code, _, stdout, stderr = await run_cli(
            "--timeout", "2", "--insecure-registry", host, f"{host}/team/web:1"
        )
        elapsed = asyncio.get_running_loop().time() - started
    assert code == 1
    assert (
        stderr == f"archwarden: error: registry {host}: no complete answer within 2s: team/web:1\n"
    )
    # A timed-out request is tried once more, as for a per-read timeout: two requests of 2 s.
    assert elapsed < 8.0
    assert "error: see stderr" in stdout
