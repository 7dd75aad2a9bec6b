"""The kubelet's ``CredentialProviderConfig`` and its image matching, read as the kubelet reads
them (``pkg/credentialprovider/plugin/config.go`` and ``keyring.go``, Kubernetes 1.37).

A config is a file, or a directory whose ``*.json``/``*.yaml``/``*.yml`` files are read in name
order and their providers concatenated (a name may appear once in all). Decoding is strict, as
the kubelet's: an unknown field is an error. Every error is one line naming the file and field.

Matching (``URLsMatchStr``): a pattern and an image are both read as URLs without a scheme. They
match when their hosts have the same number of dot-separated parts and each part matches as a
shell glob (``*``, ``?``, ``[a-z]``, ``[^a]``: Go's ``filepath.Match``), the ports are equal
(none on both, or the same one), and the pattern's path is a string prefix of the image's (so
``registry.io/team`` also matches ``registry.io/teams/x``, as in the kubelet).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

__all__ = [
    "CONFIG_API_VERSIONS",
    "CONFIG_MAX_BYTES",
    "PROVIDER_API_VERSIONS",
    "InvalidProviderConfig",
    "Provider",
    "ProviderConfig",
    "TokenAttributes",
    "auth_key",
    "load_provider_config",
    "matches",
    "parse_duration",
    "parse_provider_config",
]

CONFIG_API_VERSIONS = (
    "kubelet.config.k8s.io/v1",
    "kubelet.config.k8s.io/v1beta1",
    "kubelet.config.k8s.io/v1alpha1",
)
PROVIDER_API_VERSIONS = (
    "credentialprovider.kubelet.k8s.io/v1",
    "credentialprovider.kubelet.k8s.io/v1beta1",
    "credentialprovider.kubelet.k8s.io/v1alpha1",
)
TOKEN_API_VERSION = "credentialprovider.kubelet.k8s.io/v1"  # noqa: S105 (not a secret)
"""The only request version that carries a ServiceAccount token (the kubelet refuses
``tokenAttributes`` with another)."""
CACHE_TYPES = ("ServiceAccount", "Token")
CONFIG_MAX_BYTES = 1024 * 1024
"""Bytes of one config file: real ones list a few providers in a kilobyte; a wrong path (a huge
file, /dev/zero) is one line instead of the memory it would take."""
MAX_CONFIG_FILES = 64


class InvalidProviderConfig(ValueError):
    """A credential provider config that cannot be used; one line, naming file and field."""


@dataclasses.dataclass(frozen=True)
class TokenAttributes:
    """``tokenAttributes``: the provider is given a token of the pod's ServiceAccount."""

    audience: str
    """``serviceAccountTokenAudience``: the audience the token is requested for."""
    cache_type: str
    """``cacheType``: ``Token`` (answers cached per token) or ``ServiceAccount``."""
    require_service_account: bool
    """``requireServiceAccount``: without a ServiceAccount the plugin is not run."""
    required_annotation_keys: tuple[str, ...] = ()
    """Annotations of the ServiceAccount passed to the plugin; without one of them it is not run."""
    optional_annotation_keys: tuple[str, ...] = ()
    """Annotations passed to the plugin when the ServiceAccount has them."""


@dataclasses.dataclass(frozen=True)
class Provider:
    """One ``providers[]`` entry: an executable in the bin directory named ``name``."""

    name: str
    match_images: tuple[str, ...]
    default_cache_duration: float
    """Seconds an answer without ``cacheDuration`` is kept; 0: not kept."""
    api_version: str
    """The ``CredentialProviderRequest`` version sent, and the only one accepted back."""
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = dataclasses.field(default=(), repr=False)
    """Added to (and overriding) archwarden's own environment; values may be secrets."""
    token_attributes: TokenAttributes | None = None

    def matches(self, image: str) -> bool:
        return any(matches(pattern, image) for pattern in self.match_images)


@dataclasses.dataclass(frozen=True)
class ProviderConfig:
    providers: tuple[Provider, ...] = ()

    @property
    def uses_tokens(self) -> bool:
        return any(p.token_attributes is not None for p in self.providers)

    @property
    def annotation_keys(self) -> frozenset[str]:
        """Every ServiceAccount annotation some provider reads: all that needs keeping."""
        keys: set[str] = set()
        for p in self.providers:
            if p.token_attributes is not None:
                keys.update(p.token_attributes.required_annotation_keys)
                keys.update(p.token_attributes.optional_annotation_keys)
        return frozenset(keys)


# -- durations (Go's time.ParseDuration, as metav1.Duration is written) --------------------------

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in a Go duration (``1h30m``, ``90s``, ``1.5h``, ``0``); ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"expected a duration string, got {type(text).__name__}")
    body = text
    sign = 1.0
    if body[:1] in "+-" and body:
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    total = 0.0
    position = 0
    while position < len(body):
        found = _DURATION_PART.match(body, position)
        if found is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(found.group(1)) * _UNITS[found.group(2)]
        position = found.end()
    return sign * total


# -- matching (keyring.go URLsMatchStr, filepath.Match) --------------------------------------------


def _split_url(text: str) -> tuple[str, str]:
    """(host, path) of a schemeless URL as Go's ``url.Parse("https://" + text)`` splits it."""
    end = len(text)
    for stop in "/?#":
        found = text.find(stop)
        if found != -1:
            end = min(end, found)
    host = text[:end].rpartition("@")[2]  # userinfo is not part of the host
    path = text[end:].split("?", 1)[0].split("#", 1)[0]
    return host, path


def _split_host_port(host: str) -> tuple[list[str], str]:
    """Go's ``SplitURL``: a host without a parseable port keeps it all, port ''."""
    name, port = host, ""
    if host.startswith("["):
        close = host.find("]")
        if close != -1 and host[close + 1 : close + 2] == ":" and ":" not in host[close + 2 :]:
            name, port = host[1:close], host[close + 2 :]
    elif host.count(":") == 1:
        name, port = host.split(":")
    return name.split("."), port


def _glob_regex(pattern: str) -> re.Pattern[str] | None:
    """Go's ``filepath.Match`` pattern as a regex (``/`` is the separator); None when the
    pattern is malformed, which the kubelet treats as no match."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\":
            i += 1
            if i >= len(pattern):
                return None
            out.append(re.escape(pattern[i]))
        elif c == "[":
            i += 1
            negate = pattern[i : i + 1] == "^"
            if negate:
                i += 1
            ranges: list[str] = []
            first = True
            while True:
                if i >= len(pattern):
                    return None
                if pattern[i] == "]" and not first:
                    break
                first = False
                lo = pattern[i]
                if lo == "\\":
                    i += 1
                    if i >= len(pattern):
                        return None
                    lo = pattern[i]
                elif lo in "-]":
                    return None
                i += 1
                hi = lo
                if pattern[i : i + 1] == "-":
                    i += 1
                    if i >= len(pattern):
                        return None
                    hi = pattern[i]
                    if hi == "\\":
                        i += 1
                        if i >= len(pattern):
                            return None
                        hi = pattern[i]
                    elif hi in "-]":
                        return None
                    i += 1
                ranges.append(re.escape(lo) if lo == hi else f"{re.escape(lo)}-{re.escape(hi)}")
            body = "".join(ranges)
            out.append(f"[^/{body}]" if negate else f"(?!/)[{body}]")
        else:
            out.append(re.escape(c))
        i += 1
    try:
        return re.compile("".join(out), re.DOTALL)
    except re.error:
        return None  # a reversed range (z-a)


def matches(pattern: str, image: str) -> bool:
    """Whether ``pattern`` (a ``matchImages`` entry or an auth key) covers ``image``
    (``host[:port]/path``, no tag or digest), exactly as the kubelet decides."""
    pattern_host, pattern_path = _split_url(pattern)
    image_host, image_path = _split_url(image)
    pattern_parts, pattern_port = _split_host_port(pattern_host)
    image_parts, image_port = _split_host_port(image_host)
    if pattern_port != image_port or len(pattern_parts) != len(image_parts):
        return False
    if not image_path.startswith(pattern_path):
        return False
    for glob, part in zip(pattern_parts, image_parts, strict=True):
        regex = _glob_regex(glob)
        if regex is None or regex.fullmatch(part) is None:
            return False
    return True


def auth_key(key: str) -> str:
    """An auth map key as the kubelet's keyring indexes it: scheme dropped, a ``/v1/`` or
    ``/v2/`` path prefix read as the root, a bare ``/`` dropped (``BasicDockerKeyring.Add``)."""
    for scheme in ("https://", "http://"):
        if key.startswith(scheme):
            key = key[len(scheme) :]
            break
    host, path = _split_url(key)
    if path.startswith(("/v2/", "/v1/")):
        path = path[3:]
    return host + path if path and path != "/" else host


# -- decoding -------------------------------------------------------------------------------------


def _only(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in set(data) - allowed)
    if unknown:
        raise InvalidProviderConfig(f"{where}: unknown field {unknown[0]!r}")


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidProviderConfig(f"{where}: expected a list of strings")
    return tuple(value)


_QUALIFIED = re.compile(
    r"^(?:[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*/)?"
    r"[a-z0-9](?:[-a-z0-9_.]*[a-z0-9])?$"
)


def _annotation_keys(value: Any, where: str) -> tuple[str, ...]:
    keys = _strings(value, where)
    for key in keys:
        prefix, _, name = key.lower().rpartition("/")
        if _QUALIFIED.match(key.lower()) is None or len(name) > 63 or len(prefix) > 253:
            raise InvalidProviderConfig(f"{where}: {key!r} is not a valid annotation key")
    if len(set(keys)) != len(keys):
        raise InvalidProviderConfig(f"{where}: duplicate key")
    return keys


def _token_attributes(data: Any, where: str, api_version: str) -> TokenAttributes | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise InvalidProviderConfig(f"{where}: expected an object")
    _only(
        data,
        {
            "serviceAccountTokenAudience",
            "cacheType",
            "requireServiceAccount",
            "requiredServiceAccountAnnotationKeys",
            "optionalServiceAccountAnnotationKeys",
        },
        where,
    )
    if api_version != TOKEN_API_VERSION:
        raise InvalidProviderConfig(f"{where}: only supported with apiVersion {TOKEN_API_VERSION}")
    audience = data.get("serviceAccountTokenAudience")
    if not isinstance(audience, str) or not audience:
        raise InvalidProviderConfig(f"{where}.serviceAccountTokenAudience: required")
    require = data.get("requireServiceAccount")
    if not isinstance(require, bool):
        raise InvalidProviderConfig(f"{where}.requireServiceAccount: required (true or false)")
    cache_type = data.get("cacheType")
    if cache_type not in CACHE_TYPES:
        raise InvalidProviderConfig(f"{where}.cacheType: must be one of {', '.join(CACHE_TYPES)}")
    required = _annotation_keys(
        data.get("requiredServiceAccountAnnotationKeys"),
        f"{where}.requiredServiceAccountAnnotationKeys",
    )
    optional = _annotation_keys(
        data.get("optionalServiceAccountAnnotationKeys"),
        f"{where}.optionalServiceAccountAnnotationKeys",
    )
    if required and not require:
        raise InvalidProviderConfig(
            f"{where}.requiredServiceAccountAnnotationKeys: needs requireServiceAccount: true"
        )
    if set(required) & set(optional):
        raise InvalidProviderConfig(f"{where}: a key cannot be both required and optional")
    return TokenAttributes(audience, str(cache_type), require, required, optional)


def _provider(data: Any, where: str) -> Provider:
    if not isinstance(data, dict):
        raise InvalidProviderConfig(f"{where}: expected an object")
    _only(
        data,
        {
            "name",
            "matchImages",
            "defaultCacheDuration",
            "apiVersion",
            "args",
            "env",
            "tokenAttributes",
        },
        where,
    )
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidProviderConfig(f"{where}.name: required")
    where = f"{where} ({name})"
    if "/" in name or " " in name or name in (".", ".."):
        raise InvalidProviderConfig(f"{where}.name: must be a file name (no '/', no spaces)")
    api_version = data.get("apiVersion")
    if api_version not in PROVIDER_API_VERSIONS:
        raise InvalidProviderConfig(
            f"{where}.apiVersion: must be one of {', '.join(PROVIDER_API_VERSIONS)}"
        )
    match_images = _strings(data.get("matchImages"), f"{where}.matchImages")
    if not match_images:
        raise InvalidProviderConfig(f"{where}.matchImages: at least one pattern is required")
    if "defaultCacheDuration" not in data:
        raise InvalidProviderConfig(f"{where}.defaultCacheDuration: required")
    try:
        default = parse_duration(data["defaultCacheDuration"])
    except ValueError as exc:
        raise InvalidProviderConfig(f"{where}.defaultCacheDuration: {exc}") from None
    if default < 0:
        raise InvalidProviderConfig(f"{where}.defaultCacheDuration: must not be negative")
    env: list[tuple[str, str]] = []
    raw_env = data.get("env") or []
    if not isinstance(raw_env, list):
        raise InvalidProviderConfig(f"{where}.env: expected a list")
    for item in raw_env:
        if not isinstance(item, dict):
            raise InvalidProviderConfig(f"{where}.env[]: expected {{name, value}}")
        _only(item, {"name", "value"}, f"{where}.env[]")
        if not isinstance(item.get("name"), str) or not isinstance(item.get("value", ""), str):
            raise InvalidProviderConfig(f"{where}.env[]: name and value must be strings")
        env.append((item["name"], item.get("value", "")))
    return Provider(
        name=name,
        match_images=match_images,
        default_cache_duration=default,
        api_version=str(api_version),
        args=_strings(data.get("args"), f"{where}.args"),
        env=tuple(env),
        token_attributes=_token_attributes(
            data.get("tokenAttributes"), f"{where}.tokenAttributes", str(api_version)
        ),
    )


def parse_provider_config(content: bytes | str, source: str = "config") -> ProviderConfig:
    """One document's providers (YAML or JSON), validated as the kubelet validates them."""
    if len(content) > CONFIG_MAX_BYTES:
        raise InvalidProviderConfig(f"{source}: larger than {CONFIG_MAX_BYTES} bytes")
    try:
        data = yaml.safe_load(content)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise InvalidProviderConfig(f"{source}: not valid YAML or JSON{where}") from None
    if not isinstance(data, dict):
        raise InvalidProviderConfig(f"{source}: expected a CredentialProviderConfig object")
    if data.get("kind") != "CredentialProviderConfig":
        raise InvalidProviderConfig(f"{source}: kind must be CredentialProviderConfig")
    if data.get("apiVersion") not in CONFIG_API_VERSIONS:
        raise InvalidProviderConfig(
            f"{source}: apiVersion must be one of {', '.join(CONFIG_API_VERSIONS)}"
        )
    _only(data, {"kind", "apiVersion", "providers"}, source)
    raw = data.get("providers")
    if not isinstance(raw, list):
        raise InvalidProviderConfig(f"{source}.providers: expected a list")
    providers = tuple(_provider(p, f"{source}: providers[{i}]") for i, p in enumerate(raw))
    return ProviderConfig(providers)


def load_provider_config(path: str) -> ProviderConfig:
    """The config at ``path``: a file, or a directory of ``*.json``/``*.yaml``/``*.yml``
    files merged in name order (kubelet 1.35+). At least one provider, names unique."""
    try:
        if os.path.isdir(path):
            names = sorted(
                n
                for n in os.listdir(path)
                if n.endswith((".json", ".yaml", ".yml")) and not os.path.isdir(f"{path}/{n}")
            )
            if not names:
                raise InvalidProviderConfig(f"{path}: no *.json, *.yaml or *.yml files")
            files = [os.path.join(path, n) for n in names[: MAX_CONFIG_FILES + 1]]
            if len(files) > MAX_CONFIG_FILES:
                raise InvalidProviderConfig(f"{path}: more than {MAX_CONFIG_FILES} config files")
        else:
            files = [path]
        providers: list[Provider] = []
        for file in files:
            with open(file, "rb") as handle:
                content = handle.read(CONFIG_MAX_BYTES + 1)
            providers.extend(parse_provider_config(content, file).providers)
    except OSError as exc:
        raise InvalidProviderConfig(
            f"cannot read credential provider config {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    if not providers:
        raise InvalidProviderConfig(f"{path}: at least one provider is required")
    seen: set[str] = set()
    for p in providers:
        if p.name in seen:
            raise InvalidProviderConfig(f"{path}: duplicate provider name {p.name!r}")
        seen.add(p.name)
    return ProviderConfig(tuple(providers))
