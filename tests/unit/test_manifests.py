"""Manifest documents: parsing, sniffing, digests (incl. signed schema1) and index entries."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from archwarden.platforms import Platform
from archwarden.registry import _manifests as m

from .fakes import digest_of, fixture

SCHEMA1_DIGEST = "sha256:7364fea9d84ee548ab67d4c46c6006289800c98de3fbf8c0a97138dfcc23f000"
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def doc(body: dict[str, Any], content_type: str = m.OCI_INDEX) -> m.Document:
    return m.Document.parse(json.dumps(body).encode(), content_type)


def index_doc(*entries: dict[str, Any]) -> m.Document:
    return doc({"schemaVersion": 2, "mediaType": m.OCI_INDEX, "manifests": list(entries)})


def test_accept_lists_every_type() -> None:
    for media_type in (m.OCI_INDEX, m.DOCKER_LIST, m.OCI_MANIFEST, m.DOCKER_SCHEMA2):
        assert media_type in m.ACCEPT
    assert f"{m.DOCKER_SCHEMA1_SIGNED};q=0.5" in m.ACCEPT
    assert f"{m.DOCKER_SCHEMA1};q=0.5" in m.ACCEPT


def test_signed_schema1_payload_digest() -> None:
    raw = fixture("containers_image_schema1_signed.json")
    document = m.Document.parse(raw, m.DOCKER_SCHEMA1_SIGNED)
    assert document.is_schema1
    assert m.schema1_payload(raw, document.body) == fixture(
        "containers_image_schema1_unsigned.json"
    )
    assert document.digest() == SCHEMA1_DIGEST
    assert digest_of(raw) != SCHEMA1_DIGEST
    assert document.schema1_platform() == Platform("linux", "amd64")


def test_schema1_platform_comes_from_the_signed_payload() -> None:
    # An extra key after the payload is outside what the digest covers: the same digest must
    # not answer arm64 for a document whose verified payload says amd64.
    raw = fixture("containers_image_schema1_signed.json")
    length = 5478  # formatLength in the first signature's protected header
    forged = raw[:length] + b',\n   "architecture": "arm64"' + raw[length:]
    document = m.Document.parse(forged, m.DOCKER_SCHEMA1_SIGNED)
    assert document.body["architecture"] == "arm64"  # what a reader of the whole sees
    assert document.digest() == SCHEMA1_DIGEST
    assert document.schema1_platform() == Platform("linux", "amd64")


def test_unsigned_schema1_digest_is_the_raw_digest() -> None:
    raw = fixture("containers_image_schema1_unsigned.json")
    document = m.Document.parse(raw, m.DOCKER_SCHEMA1)
    assert document.digest() == SCHEMA1_DIGEST == digest_of(raw)
    assert document.schema1_platform() == Platform("linux", "amd64")


def test_schema1_sniffed_from_generic_content_types() -> None:
    signed = fixture("containers_image_schema1_signed.json")
    unsigned = fixture("containers_image_schema1_unsigned.json")
    assert m.Document.parse(signed, "text/plain").media_type == m.DOCKER_SCHEMA1_SIGNED
    assert m.Document.parse(unsigned, "application/json").media_type == m.DOCKER_SCHEMA1


@pytest.mark.parametrize(
    "protected",
    [
        None,
        "!!!",
        base64.urlsafe_b64encode(b'{"formatTail": "Cn0"}').decode(),
        base64.urlsafe_b64encode(b'{"formatLength": 999999, "formatTail": "Cn0"}').decode(),
        base64.urlsafe_b64encode(b'{"formatLength": 0, "formatTail": "Cn0"}').decode(),
    ],
)
def test_schema1_bad_protected_header(protected: str | None) -> None:
    body = {"schemaVersion": 1, "architecture": "amd64", "signatures": [{"protected": protected}]}
    document = doc(body, m.DOCKER_SCHEMA1_SIGNED)
    with pytest.raises(m.DocumentError, match="schema1"):
        document.digest()


def test_schema1_platform_os_from_history_and_arm_normalised() -> None:
    body = {
        "schemaVersion": 1,
        "architecture": "arm",
        "history": [{"v1Compatibility": json.dumps({"os": "windows"})}],
    }
    assert doc(body, m.DOCKER_SCHEMA1).schema1_platform() == Platform("windows", "arm", "v7")
    no_history = {"schemaVersion": 1, "architecture": "arm64"}
    assert doc(no_history, m.DOCKER_SCHEMA1).schema1_platform() == Platform("linux", "arm64")
    with pytest.raises(m.DocumentError, match="no architecture"):
        doc({"schemaVersion": 1}, m.DOCKER_SCHEMA1).schema1_platform()


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        ({"mediaType": m.OCI_INDEX, "manifests": []}, "", m.OCI_INDEX),
        ({"mediaType": m.DOCKER_LIST, "manifests": []}, "application/json", m.DOCKER_LIST),
        ({"manifests": []}, "application/octet-stream", m.OCI_INDEX),
        ({"config": {"digest": D1}}, "text/plain", m.OCI_MANIFEST),
        ({"mediaType": m.DOCKER_SCHEMA2, "config": {}}, "", m.DOCKER_SCHEMA2),
        ({"manifests": []}, f"{m.OCI_INDEX}; charset=utf-8", m.OCI_INDEX),
        ({"manifests": []}, m.OCI_INDEX.upper(), m.OCI_INDEX),
        ({"mediaType": m.OCI_MANIFEST, "config": {}}, "application/x-unknown", m.OCI_MANIFEST),
    ],
)
def test_media_type(body: dict[str, Any], content_type: str, expected: str) -> None:
    assert doc(body, content_type).media_type == expected


@pytest.mark.parametrize(
    ("raw", "content_type", "message"),
    [
        (b"not json", m.OCI_INDEX, "manifest is not valid JSON"),
        (b"\xff\xfe", m.OCI_INDEX, "manifest is not valid JSON"),
        (b"[]", m.OCI_INDEX, "manifest is not a JSON object"),
        (
            json.dumps({"mediaType": m.OCI_INDEX, "manifests": []}).encode(),
            m.DOCKER_LIST,
            f"Content-Type {m.DOCKER_LIST} contradicts the document's mediaType {m.OCI_INDEX}",
        ),
        (
            json.dumps({"mediaType": "application/vnd.oci.artifact.manifest.v1+json"}).encode(),
            "application/vnd.oci.artifact.manifest.v1+json",
            "unsupported manifest type (mediaType application/vnd.oci.artifact.manifest.v1+json)",
        ),
        (b"{}", "", "unsupported manifest type (mediaType none)"),
    ],
)
def test_parse_errors(raw: bytes, content_type: str, message: str) -> None:
    with pytest.raises(m.DocumentError) as caught:
        m.Document.parse(raw, content_type)
    assert str(caught.value) == message


def test_digest_is_over_the_raw_bytes() -> None:
    raw = b'{"manifests":[],   "mediaType":"' + m.OCI_INDEX.encode() + b'"}'
    document = m.Document.parse(raw, m.OCI_INDEX)
    assert document.digest() == digest_of(raw)
    assert document.digest("sha512").startswith("sha512:")
    assert len(document.digest("sha512")) == len("sha512:") + 128
    with pytest.raises(m.DocumentError, match="unsupported digest algorithm 'md5'"):
        document.digest("md5")


def test_children_filters_attestations_builder_refs_and_unknown() -> None:
    document = index_doc(
        {
            "mediaType": m.OCI_MANIFEST,
            "digest": D1,
            "size": 5,
            "platform": {"os": "linux", "architecture": "arm"},
        },
        {
            "mediaType": m.OCI_MANIFEST,
            "digest": D2,
            "size": 5,
            "platform": {"os": "linux", "architecture": "amd64"},
            "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
        },
        {
            "mediaType": m.OCI_MANIFEST,
            "digest": D2,
            "platform": {"os": "linux", "architecture": "amd64"},
            "annotations": {"vnd.docker.reference.type": "builder"},
        },
        {
            "mediaType": m.OCI_MANIFEST,
            "digest": D2,
            "platform": {"os": "unknown", "architecture": "unknown"},
        },
        {"mediaType": m.OCI_INDEX, "digest": D2},
    )
    assert document.children() == [
        m.Descriptor(m.OCI_MANIFEST, D1, 5, Platform("linux", "arm", "v7")),
        m.Descriptor(m.OCI_INDEX, D2, -1, None),
    ]


@pytest.mark.parametrize(
    "platform",
    [{}, {"os": "linux"}, {"architecture": "amd64"}, {"os": "", "architecture": "amd64"}],
)
def test_an_incomplete_platform_means_fetch_the_child(platform: dict[str, str]) -> None:
    # OCI requires os and architecture; without them the entry cannot say where it runs, so the
    # resolver must read the child's config instead of reporting "linux/" or "/amd64".
    document = index_doc({"mediaType": m.OCI_MANIFEST, "digest": D1, "platform": platform})
    assert document.children() == [m.Descriptor(m.OCI_MANIFEST, D1, -1, None)]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("x", "index entry is not an object"),
        ({"mediaType": m.OCI_MANIFEST}, "index entry has no digest"),
        ({"digest": "sha256:abc"}, "index entry digest is invalid: malformed digest"),
        ({"digest": "md5:" + "a" * 32}, "unsupported digest algorithm 'md5'"),
    ],
)
def test_children_errors(entry: Any, message: str) -> None:
    with pytest.raises(m.DocumentError, match=message):
        index_doc(entry).children()
    with pytest.raises(m.DocumentError, match="index has no manifests list"):
        doc({"mediaType": m.OCI_INDEX, "manifests": {}}).children()


def test_config_descriptor() -> None:
    raw = fixture("containers_image_schema2_httpd_amd64.json")
    document = m.Document.parse(raw, m.DOCKER_SCHEMA2)
    assert document.is_image
    assert document.config() == m.Descriptor(
        "application/octet-stream",
        "sha256:9ca4bda0a6b3727a6ffcc43e981cad0f24e2ec79d338f6ba325b4dfd0756fb8f",
        5940,
    )
    with pytest.raises(m.DocumentError, match="no config descriptor"):
        doc({"mediaType": m.OCI_MANIFEST}, m.OCI_MANIFEST).config()
    with pytest.raises(m.DocumentError, match="config digest is invalid"):
        doc({"mediaType": m.OCI_MANIFEST, "config": {"digest": "x"}}, m.OCI_MANIFEST).config()


def test_config_platform() -> None:
    assert m.config_platform(fixture("regclient_oci_config_arm_v7.json")) == Platform(
        "linux", "arm", "v7"
    )
    assert m.config_platform(fixture("containers_image_schema2_httpd_amd64_config.json")) == (
        Platform("linux", "amd64")
    )
    windows = json.dumps(
        {"os": "windows", "architecture": "amd64", "os.version": "10.0.20348.1129"}
    ).encode()
    assert m.config_platform(windows) == Platform("windows", "amd64", "", "10.0.20348.1129")
    for bad, message in [
        (b"nope", "image config is not valid JSON"),
        (b"[]", "image config is not a JSON object"),
        (b'{"os": "linux"}', "image config has no os or architecture"),
    ]:
        with pytest.raises(m.DocumentError, match=message):
            m.config_platform(bad)


def test_which_manifests_are_artifacts() -> None:
    def doc(body: dict[str, object], media_type: str = m.OCI_MANIFEST) -> m.Document:
        return m.Document.parse(json.dumps({"mediaType": media_type, **body}).encode(), media_type)

    config = {"mediaType": m.OCI_CONFIG, "digest": "sha256:" + "a" * 64, "size": 2}
    declared = {"artifactType": "application/x.model", "config": config}
    assert doc(declared).artifact_type() == "application/x.model"
    empty = {"config": {**config, "mediaType": m.OCI_EMPTY}}
    assert doc(empty).artifact_type() == m.OCI_EMPTY
    assert doc({"config": config}).artifact_type() == ""
    # Docker manifests were always images, whatever their config says.
    assert doc(empty, m.DOCKER_SCHEMA2).artifact_type() == ""
    # Another config type is read: an image config under a generic type stays an image's.
    image_config = json.dumps({"os": "linux", "architecture": "arm64"}).encode()
    assert not m.config_artifact("application/octet-stream", image_config)
    assert m.config_artifact("application/vnd.cncf.helm.config.v1+json", b'{"name":"c"}')
    assert m.config_artifact("application/octet-stream", b"\x00binary")
    assert not m.config_artifact(m.OCI_CONFIG, b"{}")
