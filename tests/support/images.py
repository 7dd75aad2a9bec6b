"""Seed images into a registry over the HTTP API (no docker), with an httpx sync client.

Authentication follows the registry's challenge: Basic credentials are sent up front when the
target has a username and no token server; Bearer challenges are answered by fetching a token
from the realm (``pull,push`` on the repository, Basic credentials when known), cached per repo.

Platforms are given either as a string ``os/arch[/variant][:os.version]`` — e.g.
``"linux/arm/v7"``, ``"windows/amd64:10.0.20348.1129"`` — or as a dict with OCI keys
``os``, ``architecture``, ``variant``, ``os.version``, ``os.features``. Strings are taken
literally (no normalisation), so ``"linux/arm64/v8"`` keeps its variant.

Pushes go bottom-up as distribution 2.8 requires (blobs, child manifests, then the index).
Every :meth:`Seeder.push_image` gets a layer with unique content, so digests never collide.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import itertools
import json
import os
import re
import ssl
import tarfile
import uuid
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import httpx

from tests.support.token_server import TokenServer

__all__ = [
    "ACCEPT_ALL",
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_MANIFEST",
    "SCHEMA1_JSON",
    "SCHEMA1_SIGNED",
    "Descriptor",
    "PlainRegistry",
    "RegistryTarget",
    "SeedError",
    "Seeder",
    "platform_dict",
    "schema1_payload_digest",
    "sha256_digest",
    "unique_repo",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
SCHEMA1_JSON = "application/vnd.docker.distribution.manifest.v1+json"
IN_TOTO = "application/vnd.in-toto+json"
ACCEPT_ALL = ", ".join(
    [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST, SCHEMA1_SIGNED, SCHEMA1_JSON]
)

Format = Literal["oci", "docker"]
PlatformSpec = str | Mapping[str, Any]
_PLATFORM_KEYS = ("os", "architecture", "variant", "os.version", "os.features")
_CREATED = "2024-01-01T00:00:00Z"
_counter = itertools.count(1)


class SeedError(RuntimeError):
    pass


@dataclass(frozen=True)
class PlainRegistry:
    """A registry this suite did not start (the cluster's): plain HTTP, no auth."""

    host: str
    ca_file: None = None
    username: None = None
    password: None = None
    token_server: None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}"


class RegistryTarget(Protocol):
    """What the seeder needs: a RegistryServer or a CountingProxy both fit."""

    @property
    def url(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def ca_file(self) -> Any: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...
    @property
    def token_server(self) -> TokenServer | None: ...


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    annotations: dict[str, str] | None = field(default=None, hash=False, compare=False)
    #: for indexes pushed by this module: the child descriptors, in order
    children: tuple[Descriptor, ...] = field(default=(), hash=False, compare=False, repr=False)

    def to_dict(self, *, platform: bool = False) -> dict[str, Any]:
        """OCI descriptor JSON (``platform`` only when asked; annotations when present)."""
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if platform and self.platform is not None:
            out["platform"] = dict(self.platform)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def unique_repo(prefix: str = "seed") -> str:
    """A fresh, valid repository name, for tests sharing one registry."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def platform_dict(spec: PlatformSpec) -> dict[str, Any]:
    """Parse a platform string or validate a dict (see module docstring) into OCI keys."""
    if isinstance(spec, Mapping):
        unknown = set(spec) - set(_PLATFORM_KEYS)
        if unknown or "os" not in spec or "architecture" not in spec:
            raise ValueError(f"bad platform dict {dict(spec)!r} (keys: {_PLATFORM_KEYS})")
        return {k: spec[k] for k in _PLATFORM_KEYS if k in spec and spec[k] not in (None, "")}
    path, _, os_version = spec.partition(":")
    parts = path.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"bad platform {spec!r}; expected os/arch[/variant][:os.version]")
    out: dict[str, Any] = {"os": parts[0], "architecture": parts[1]}
    if len(parts) == 3:
        out["variant"] = parts[2]
    if os_version:
        out["os.version"] = os_version
    return out


def _b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def schema1_payload_digest(raw: bytes) -> str:
    """Digest of a signed schema1 manifest: the payload with the signatures removed."""
    doc = json.loads(raw)
    protected = json.loads(_b64url_decode(doc["signatures"][0]["protected"]))
    payload = raw[: protected["formatLength"]] + _b64url_decode(protected["formatTail"])
    return sha256_digest(payload)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=False).encode()


_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_REPO_PATH = re.compile(r"^/v2/(.+?)/(?:manifests|blobs|tags)/")


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
        for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return scheme.lower(), {k: re.sub(r"\\(.)", r"\1", v) for k, v in params.items()}


class _ChallengeAuth(httpx.Auth):
    """Basic up front when there is no token server; Bearer dance on a Bearer challenge."""

    def __init__(self, target: RegistryTarget, token_client: httpx.Client) -> None:
        self._user = target.username
        self._password = target.password
        self._basic_first = self._user is not None and target.token_server is None
        self._token_client = token_client
        self._tokens: dict[str, str] = {}

    def _basic(self) -> str:
        assert self._user is not None and self._password is not None
        pair = f"{self._user}:{self._password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        m = _REPO_PATH.match(request.url.path)
        key = m.group(1) if m else ""
        if key in self._tokens:
            request.headers["Authorization"] = f"Bearer {self._tokens[key]}"
        elif self._basic_first:
            request.headers["Authorization"] = self._basic()
        response = yield request
        if response.status_code != 401:
            return
        scheme, params = _parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic" and self._user is not None and not self._basic_first:
            request.headers["Authorization"] = self._basic()
            yield request
        elif scheme == "bearer" and "realm" in params:
            token = self._fetch_token(params)
            self._tokens[key] = token
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    def _fetch_token(self, params: dict[str, str]) -> str:
        scopes: list[str] = []
        for scope in params.get("scope", "").split():
            typ, _, rest = scope.partition(":")
            name, _, _actions = rest.rpartition(":")
            scopes.append(f"repository:{name}:pull,push" if typ == "repository" and name else scope)
        query: dict[str, str | list[str]] = {"scope": scopes}
        if "service" in params:
            query["service"] = params["service"]
        auth = None
        if self._user is not None and self._password is not None:
            auth = httpx.BasicAuth(self._user, self._password)
        resp = self._token_client.get(params["realm"], params=query, auth=auth)
        if resp.status_code != 200:
            raise SeedError(f"token request to {params['realm']} failed: HTTP {resp.status_code}")
        body = resp.json()
        token = body.get("access_token") or body.get("token")
        if not isinstance(token, str) or not token:
            raise SeedError("token response without token")
        return token


class Seeder:
    """Push blobs, manifests and whole (multi-arch) images into ``server``. Close when done."""

    def __init__(self, server: RegistryTarget, *, timeout: float = 15.0) -> None:
        self.server = server
        verify: ssl.SSLContext | bool = True
        if server.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(server.ca_file))
        self._token_client = httpx.Client(timeout=timeout)
        self.client = httpx.Client(
            base_url=server.url,
            verify=verify,
            timeout=timeout,
            auth=_ChallengeAuth(server, self._token_client),
            follow_redirects=False,
        )

    def close(self) -> None:
        self.client.close()
        self._token_client.close()

    def __enter__(self) -> Seeder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ref(self, repo: str, ref: str | None = None) -> str:
        """Image reference as a client would write it: ``127.0.0.1:PORT/repo[:tag|@digest]``."""
        if ref is None:
            return f"{self.server.host}/{repo}"
        sep = "@" if ":" in ref else ":"
        return f"{self.server.host}/{repo}{sep}{ref}"

    @staticmethod
    def _fail(what: str, resp: httpx.Response) -> SeedError:
        return SeedError(f"{what}: HTTP {resp.status_code} {resp.text[:500]}")

    # -- low level -----------------------------------------------------------------------------

    def push_blob(
        self, repo: str, data: bytes, media_type: str = "application/octet-stream"
    ) -> Descriptor:
        """Monolithic upload: ``POST .../blobs/uploads/`` then ``PUT <Location>&digest=``."""
        digest = sha256_digest(data)
        resp = self.client.post(f"/v2/{repo}/blobs/uploads/")
        if resp.status_code != 202 or "Location" not in resp.headers:
            raise self._fail(f"start upload to {repo}", resp)
        location = resp.headers["Location"]
        location += ("&" if "?" in location else "?") + f"digest={digest}"
        resp = self.client.put(
            location,
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        if resp.status_code != 201:
            raise self._fail(f"finish upload of {digest} to {repo}", resp)
        got = resp.headers.get("Docker-Content-Digest")
        if got is not None and got != digest:
            raise SeedError(f"blob digest mismatch: sent {digest}, registry says {got}")
        return Descriptor(media_type, digest, len(data))

    def push_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        """PUT a manifest by tag or digest; returns its digest (checked against the registry)."""
        digest = sha256_digest(body)
        resp = self.client.put(
            f"/v2/{repo}/manifests/{ref}", content=body, headers={"Content-Type": media_type}
        )
        if resp.status_code != 201:
            raise self._fail(f"push manifest {repo}:{ref}", resp)
        got = resp.headers.get("Docker-Content-Digest")
        if got != digest:
            raise SeedError(f"manifest digest mismatch: computed {digest}, registry says {got}")
        return digest

    def get_manifest(self, repo: str, ref: str, *, accept: str = ACCEPT_ALL) -> httpx.Response:
        return self.client.get(f"/v2/{repo}/manifests/{ref}", headers={"Accept": accept})

    def tag(self, repo: str, digest: str, tag: str) -> None:
        """Point ``tag`` at the existing manifest ``digest``."""
        resp = self.get_manifest(repo, digest)
        if resp.status_code != 200:
            raise self._fail(f"fetch {repo}@{digest}", resp)
        self.push_manifest(repo, tag, resp.content, resp.headers["Content-Type"])

    def delete_manifest(self, repo: str, digest: str) -> None:
        resp = self.client.delete(f"/v2/{repo}/manifests/{digest}")
        if resp.status_code != 202:
            raise self._fail(f"delete {repo}@{digest}", resp)

    # -- images --------------------------------------------------------------------------------

    @staticmethod
    def _layer(label: str) -> tuple[bytes, bytes]:
        """A tiny unique tar layer: (gzip bytes, uncompressed tar bytes)."""
        content = f"{label} #{next(_counter)} {os.urandom(8).hex()}\n".encode()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo("archwarden-seed.txt")
            info.size = len(content)
            info.mtime = 0
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
        raw = buf.getvalue()
        return gzip.compress(raw, mtime=0), raw

    def push_image(
        self,
        repo: str,
        tag: str | None,
        platform: PlatformSpec,
        *,
        fmt: Format = "oci",
        config_extra: Mapping[str, Any] | None = None,
    ) -> Descriptor:
        """Push a single-platform image (one layer, config with history); tag optional.

        The returned descriptor carries ``platform`` (as written into the config).
        ``config_extra`` is merged shallowly into the config JSON last.
        """
        plat = platform_dict(platform)
        gz, raw = self._layer("/".join(str(plat.get(k, "")) for k in _PLATFORM_KEYS[:3]))
        layer_type, config_type, manifest_type = (
            (OCI_LAYER, OCI_CONFIG, OCI_MANIFEST)
            if fmt == "oci"
            else (DOCKER_LAYER, DOCKER_CONFIG, DOCKER_MANIFEST)
        )
        layer = self.push_blob(repo, gz, layer_type)
        config: dict[str, Any] = {
            "created": _CREATED,
            "architecture": plat["architecture"],
            "os": plat["os"],
        }
        for key in ("variant", "os.version", "os.features"):
            if key in plat:
                config[key] = plat[key]
        config["config"] = {"Cmd": ["/bin/true"]}
        config["rootfs"] = {"type": "layers", "diff_ids": [sha256_digest(raw)]}
        config["history"] = [
            {"created": _CREATED, "created_by": "archwarden test seeder: ADD archwarden-seed.txt"}
        ]
        if config_extra:
            config.update(config_extra)
        cfg = self.push_blob(repo, _dumps(config), config_type)
        manifest = {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": cfg.to_dict(),
            "layers": [layer.to_dict()],
        }
        body = _dumps(manifest)
        digest = self.push_manifest(repo, tag or sha256_digest(body), body, manifest_type)
        return Descriptor(manifest_type, digest, len(body), platform=plat)

    def push_index(
        self,
        repo: str,
        tag: str | None,
        children: Sequence[tuple[Descriptor, PlatformSpec | None]],
        *,
        fmt: Format = "oci",
        annotations: Mapping[str, str] | None = None,
    ) -> Descriptor:
        """Push an OCI index or Docker list over already-pushed children.

        A child platform of ``None`` omits the ``platform`` field (e.g. a nested index). Child
        descriptor annotations are kept.
        """
        media_type = OCI_INDEX if fmt == "oci" else DOCKER_LIST
        entries = []
        for desc, plat in children:
            entry = desc.to_dict()
            if plat is not None:
                entry["platform"] = platform_dict(plat)
            entries.append(entry)
        index: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type, "manifests": entries}
        if annotations:
            index["annotations"] = dict(annotations)
        body = _dumps(index)
        digest = self.push_manifest(repo, tag or sha256_digest(body), body, media_type)
        return Descriptor(
            media_type,
            digest,
            len(body),
            annotations=None,
            children=tuple(d for d, _ in children),
        )

    def push_artifact(
        self,
        repo: str,
        tag: str | None,
        files: Mapping[str, bytes],
        *,
        artifact_type: str | None = "application/vnd.archwarden.test.data.v1",
        config_type: str = OCI_EMPTY,
    ) -> Descriptor:
        """An OCI 1.1 artifact: the empty config (``{}``), one uncompressed tar layer holding
        ``files``, ``artifactType`` (omitted when None, as older tools write them). It names
        no platform anywhere."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, content in files.items():
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(content), 0, 0o644
                tar.addfile(info, io.BytesIO(content))
        layer = self.push_blob(repo, buf.getvalue(), OCI_LAYER_TAR)
        cfg = self.push_blob(repo, b"{}", config_type)
        manifest: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
        if artifact_type is not None:
            manifest["artifactType"] = artifact_type
        manifest["config"] = cfg.to_dict()
        manifest["layers"] = [layer.to_dict()]
        body = _dumps(manifest)
        digest = self.push_manifest(repo, tag or sha256_digest(body), body, OCI_MANIFEST)
        return Descriptor(OCI_MANIFEST, digest, len(body))

    def push_attestation(self, repo: str, subject: Descriptor) -> Descriptor:
        """A BuildKit-style attestation manifest for ``subject`` (annotated, not yet indexed)."""
        statement = _dumps(
            {
                "_type": "https://in-toto.io/Statement/v0.1",
                "predicateType": "https://slsa.dev/provenance/v0.2",
                "subject": [{"name": "_", "digest": {"sha256": subject.digest.split(":", 1)[1]}}],
                "predicate": {"builder": {"id": "archwarden-test"}, "nonce": os.urandom(8).hex()},
            }
        )
        layer = self.push_blob(repo, statement, IN_TOTO)
        layer = Descriptor(
            IN_TOTO,
            layer.digest,
            layer.size,
            annotations={"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"},
        )
        config = {
            "architecture": "unknown",
            "os": "unknown",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
        }
        cfg = self.push_blob(repo, _dumps(config), OCI_CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": cfg.to_dict(),
            "layers": [layer.to_dict()],
        }
        body = _dumps(manifest)
        digest = self.push_manifest(repo, sha256_digest(body), body, OCI_MANIFEST)
        return Descriptor(
            OCI_MANIFEST,
            digest,
            len(body),
            platform={"architecture": "unknown", "os": "unknown"},
            annotations={
                "vnd.docker.reference.digest": subject.digest,
                "vnd.docker.reference.type": "attestation-manifest",
            },
        )

    def push_multiarch(
        self,
        repo: str,
        tag: str,
        platforms: Sequence[PlatformSpec],
        *,
        fmt: Format = "oci",
        attestations: bool = False,
    ) -> Descriptor:
        """One image per platform plus the index/list; ``attestations`` (OCI only) appends one
        ``unknown/unknown`` attestation manifest per image, as BuildKit does."""
        if attestations and fmt != "oci":
            raise ValueError("BuildKit attaches attestation manifests only to OCI indexes")
        images = [self.push_image(repo, None, p, fmt=fmt) for p in platforms]
        children: list[tuple[Descriptor, PlatformSpec | None]] = [(d, d.platform) for d in images]
        if attestations:
            for image in images:
                att = self.push_attestation(repo, image)
                children.append((att, att.platform))
        return self.push_index(repo, tag, children, fmt=fmt)

    def push_mislabelled(
        self,
        repo: str,
        tag: str,
        claims: Sequence[tuple[PlatformSpec, PlatformSpec]],
        *,
        fmt: Format = "oci",
    ) -> Descriptor:
        """An index whose entries claim one platform each for images built for another: pairs
        of (platform the index lists, platform the image's config names). Equal pairs make
        honest entries; ``[("linux/amd64", "linux/amd64"), ("linux/arm64", "linux/amd64")]``
        is the classic lie of an amd64 build published as arm64 too."""
        children = [
            (self.push_image(repo, None, actual, fmt=fmt), claimed) for claimed, actual in claims
        ]
        return self.push_index(repo, tag, children, fmt=fmt)

    def push_schema1(self, repo: str, tag: str, platform: PlatformSpec) -> tuple[bytes, str]:
        """Push Docker schema2 under ``tag``, then GET it with only schema1 types accepted.

        2.8 rewrites it to signed schema1 (prettyjws). Returns (raw bytes, Docker-Content-Digest);
        that digest is the signature-stripped payload digest (see :func:`schema1_payload_digest`).
        The schema1 form is not stored: the tag still points at schema2.
        """
        self.push_image(repo, tag, platform, fmt="docker")
        resp = self.get_manifest(repo, tag, accept=f"{SCHEMA1_SIGNED}, {SCHEMA1_JSON}")
        if resp.status_code != 200:
            raise self._fail(f"schema1 rewrite of {repo}:{tag}", resp)
        ctype = resp.headers.get("Content-Type", "")
        if not ctype.startswith(SCHEMA1_SIGNED):
            raise SeedError(f"expected {SCHEMA1_SIGNED}, got {ctype!r}")
        return resp.content, resp.headers["Docker-Content-Digest"]
