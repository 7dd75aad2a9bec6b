"""archwarden's configuration file (YAML), read by ``archwarden run --config FILE``.

Every key is optional; an unknown key or a wrong type is an error naming the key, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Set
from pathlib import Path
from typing import Any

import yaml

from archwarden import platforms, policy, registry

__all__ = ["ConfigError", "Settings", "load", "platform_taint"]

MODES = ("enforce", "warn", "audit")
FAILURE_POLICIES = ("open", "closed")
SKIP_POLICIES = ("everyone", "labelledNamespaces", "nobody")
GATE_MODES = ("off", "webhook", "policy")


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the key."""


@dataclasses.dataclass(frozen=True)
class WebhookSettings:
    port: int = 9443
    """HTTPS port for both admission webhooks."""
    address: str = "0.0.0.0"  # noqa: S104 - a webhook must be reachable by the apiserver
    """Listen address."""
    cert_file: str | None = None
    key_file: str | None = None
    """Serving certificate and key (PEM); re-read when they change. Unset with ``--dev``."""
    budget_seconds: float = 3.0
    """Time each admission may spend on registries: below the webhook's 5 s timeout, so a slow
    registry yields an answer by policy (stale cache, failurePolicy) instead of an apiserver
    timeout."""
    timeout_seconds: int = 5
    """The apiserver's timeout for our webhooks (the chart's webhook configurations)."""
    reload_seconds: float = 60.0
    """How often the certificate files (and ``client_ca_file``) are checked; a changed pair is
    served from then on (cert-manager renewals, rotated Secrets) without a restart."""
    client_ca_file: str | None = None
    """PEM bundle of the CA that signs the API server's client certificate. Set: the HTTPS
    server requires a client certificate signed by it (the handshake fails otherwise), so
    forged reviews from other callers are never read. Unset: anyone reaching the port is
    served, and Events are posted only about objects that exist."""
    client_names: tuple[str, ...] = ()
    """With ``client_ca_file``: the client certificate's CN or one of its DNS SANs must be one
    of these (a CA shared with other clients, such as the cluster's client CA, then does not let
    every holder in). Empty: any certificate of the CA."""


@dataclasses.dataclass(frozen=True)
class MetricsSettings:
    port: int = 8080
    """Plain-HTTP port serving /metrics, /healthz and /readyz."""
    address: str = "0.0.0.0"  # noqa: S104 - scraped by Prometheus from other pods


@dataclasses.dataclass(frozen=True)
class LimitsSettings:
    """Work one admission review may cause: anything that makes archwarden slow or dead admits
    pods unchecked (the webhooks fail open), so every per-review cost is bounded."""

    max_images_per_review: int = 64
    """Distinct images one review may resolve. Past it no registry is contacted and the review
    is decided by failurePolicy: closed denies, open admits with a warning."""
    max_concurrent_resolutions: int = 8
    """Images of one review resolved at once (each resolution has its own fetch and byte
    limits in the registry client)."""
    decision_cache_bytes: int = 32 * 1024 * 1024
    """Bytes of remembered decisions (keyed by a digest of what each decision read): dry runs
    of huge objects repeat nothing of themselves here."""
    template_bytes: int = 256 * 1024
    """Bytes of one pod template's projection (images, node selector, required affinity,
    tolerations, pull secrets). Past it the template is judged by failurePolicy, counted, and
    never held in a store or cache; a real template is a few KiB."""
    pull_secret_bytes: int = 256 * 1024
    """Bytes of one pull secret's ``.dockerconfigjson`` or ``.dockercfg`` (decoded); a larger
    one is reported by name and not parsed."""
    pull_secret_cache_bytes: int = 16 * 1024 * 1024
    """Bytes of parsed pull secrets remembered, each counted at what its parse keeps (1 to 8
    times its decoded size, by its shape: ``CredentialStore.held_bytes``)."""
    api_object_bytes: int = 4 * 1024 * 1024
    """Bytes of one object in a LIST page or watch event. Lists are decoded one object at a
    time, so this (not the page) bounds what a list holds at once; a longer object is an error
    and the stream starts over."""


@dataclasses.dataclass(frozen=True)
class PlatformSettings:
    """Which of containerd's cross-architecture fallbacks the nodes' CPUs execute (node labels
    ``archwarden.io/runs-arm32`` and ``archwarden.io/runs-386`` override them per node)."""

    arm64_runs_arm32: bool = False
    """arm64 nodes run 32-bit arm (arm/v5..v8) images. Off: AArch32 is optional, and absent
    from Graviton4, Google Axion, Azure Cobalt and AmpereOne."""
    amd64_runs_386: bool = True
    """amd64 nodes run 386 images (every amd64 CPU executes them)."""
    taints: tuple[policy.PlatformTaint, ...] = policy.DEFAULT_PLATFORM_TAINTS
    """Taints that keep pods off a platform's nodes unless they opt in (GKE's
    ``kubernetes.io/arch=arm64:NoSchedule``): on a node whose arch is the taint's value, a pod
    every image of which runs there is judged to tolerate it, and mutation adds the
    toleration. Empty: such taints are read as the scheduler reads them."""

    def fallbacks(self) -> platforms.Fallbacks:
        return platforms.Fallbacks(
            arm32_on_arm64=self.arm64_runs_arm32, i386_on_amd64=self.amd64_runs_386
        )


@dataclasses.dataclass(frozen=True)
class SkipSettings:
    allowed: str = "labelledNamespaces"
    """Who may opt a workload out with the annotation ``archwarden.io/skip: "true"``:
    everyone, labelledNamespaces (namespaces labelled ``archwarden.io/allow-skip: "true"``) or
    nobody. A refused skip is checked anyway, and the warning says why."""


@dataclasses.dataclass(frozen=True)
class KarpenterSettings:
    """Karpenter NodePools (``karpenter.sh/v1``) as provisionable capacity."""

    enabled: bool = True
    """Watch NodePools (when the CRD exists)."""
    default_architectures: tuple[str, ...] = ("amd64", "arm64")
    """What a pool without a ``kubernetes.io/arch`` requirement offers: the architectures of
    the provider's instance types (AWS and the kwok provider: amd64 and arm64)."""
    default_operating_systems: tuple[str, ...] = ("linux",)
    """What a pool without a ``kubernetes.io/os`` requirement offers."""
    well_known_labels: tuple[str, ...] = ()
    """Provider labels a pod may constrain although a pool does not name them (beyond
    Karpenter's own, e.g. ``karpenter.k8s.aws/instance-family``)."""


@dataclasses.dataclass(frozen=True)
class ClusterAPISettings:
    """Cluster API MachineDeployments, MachineSets and MachinePools that cluster-autoscaler
    scales from zero (its min/max size and capacity annotations)."""

    enabled: bool = True
    """Watch them (each kind when its CRD exists)."""
    default_architecture: str = "amd64"
    """The template node's arch when the capacity labels annotation does not say
    (cluster-autoscaler's own default)."""
    default_operating_system: str = "linux"
    namespaces: tuple[str, ...] = ()
    """Namespaces whose node groups count. They are namespaced objects a tenant may be allowed
    to write, and a node group in one namespace would change the decisions of every other, so
    only the namespaces named here count (``["*"]``: all of them). Empty: none."""


@dataclasses.dataclass(frozen=True)
class NodeGroupSettings:
    """A node group whose template lives outside the Kubernetes API (cluster-autoscaler on a
    cloud: ASG tags, instance templates), as its nodes would look."""

    name: str
    platforms: tuple[str, ...]
    """``os/arch[/variant]`` of its nodes (one group may mix, e.g. mixed-instance ASGs)."""
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    taints: tuple[tuple[str, str, str], ...] = ()
    """``(key, value, effect)``."""


@dataclasses.dataclass(frozen=True)
class CapacitySettings:
    """Capacity autoscalers can add: counted beside the existing nodes."""

    karpenter: KarpenterSettings = dataclasses.field(default_factory=KarpenterSettings)
    cluster_api: ClusterAPISettings = dataclasses.field(default_factory=ClusterAPISettings)
    node_groups: tuple[NodeGroupSettings, ...] = ()


@dataclasses.dataclass(frozen=True)
class AuditSettings:
    """The background audit of workloads already in the cluster (``archwarden.audit``)."""

    enabled: bool = True
    period_seconds: float = 3600.0
    """Every workload is judged once at start (when the workloads are listed) and then once
    per period."""
    requests_per_second: float = 2.0
    """Registry requests the audit may send per second, per registry host (admissions are
    never counted against it nor wait for it). A 429 holds that registry for its Retry-After."""
    burst: int = 5
    """Requests a registry's budget may save up while idle."""
    verify_images: bool = False
    """Also fetch each index entry's config blob (as ``archwarden inspect --verify``) once per
    digest, and report entries whose config names another platform
    (``ImagePlatformsMislabelled``)."""


@dataclasses.dataclass(frozen=True)
class ReportsSettings:
    enabled: bool = True
    """Write OpenReports ``Report``/``ClusterReport`` objects after each audit (only when the
    openreports.io CRDs are installed)."""


@dataclasses.dataclass(frozen=True)
class CredentialProviderSettings:
    """Kubelet credential provider plugins: read images as the node would, with its identity
    (ECR, GCP Artifact Registry, ACR) where no pull secret exists."""

    enabled: bool = False
    config: str = "/etc/archwarden/credential-providers"
    """The kubelet's ``--image-credential-provider-config``: a CredentialProviderConfig file,
    or a directory of them (read in name order)."""
    bin_dir: str = "/var/lib/archwarden/credential-providers/bin"
    """The kubelet's ``--image-credential-provider-bin-dir``: the plugins, by provider name."""
    timeout_seconds: float = registry.ProviderLimits.timeout
    """Seconds one plugin run may take (never more than half of what a review has left)."""
    output_bytes: int = registry.ProviderLimits.output_bytes
    """Bytes of a plugin's answer; a longer one is cut and refused."""
    stderr_bytes: int = registry.ProviderLimits.stderr_bytes
    """Bytes of a plugin's stderr kept (never shown: it may quote secrets)."""
    cache_bytes: int = registry.ProviderLimits.cache_bytes
    """Bytes of plugin answers cached (per cacheKeyType and cacheDuration), oldest first."""
    token_cache_bytes: int = 4 * 1024 * 1024
    """Bytes of ServiceAccount tokens kept for token-mode providers (``tokenAttributes``)."""
    max_concurrent_runs: int = registry.ProviderLimits.concurrency
    """Plugin processes running at once, across every review."""

    def limits(self) -> registry.ProviderLimits:
        return registry.ProviderLimits(
            timeout=self.timeout_seconds,
            output_bytes=self.output_bytes,
            stderr_bytes=self.stderr_bytes,
            cache_bytes=self.cache_bytes,
            concurrency=self.max_concurrent_runs,
        )


@dataclasses.dataclass(frozen=True)
class SchedulingGateSettings:
    """The scheduling gate ``archwarden.io/platforms``: pods wait for their check."""

    mode: str = "off"
    """off (pods archwarden cannot decide in time are admitted unchecked), webhook (the webhook
    gates a pod it cannot decide within its budget) or policy (the chart's
    MutatingAdmissionPolicy gates every pod in scope inside the API server; the chart's default
    wherever the API server serves it). In both gated modes archwarden removes the gate once it
    has decided, and keeps it on pods no capacity can run."""
    retry_seconds: float = 2.0
    """How soon a gated pod whose images (or whose object) could not be read is tried again,
    doubling up to five times this while the failure lasts."""
    max_concurrent: int = 4
    """Gated pods decided at once in the background."""


@dataclasses.dataclass(frozen=True)
class LeaderElectionSettings:
    """Which replica does the background work that writes to the cluster (the audit and its
    reports, tag drift, re-evaluation Events, exec format explanations, gated pods): the holder
    of one ``coordination.k8s.io`` Lease. Every replica serves admissions either way."""

    enabled: bool = True
    """Off (or ``archwarden run --dev``): this process leads itself; for one replica only."""
    lease_name: str = "archwarden-leader"
    """The Lease, in ``namespace``."""
    namespace: str | None = None
    """Where the Lease lives; unset: the pod's namespace (POD_NAMESPACE, which the chart sets),
    else ``default``."""
    lease_duration_seconds: int = 15
    """How long a Lease not renewed stays its holder's: after a leader dies (SIGKILL, a lost
    node) another replica takes over this long after it last saw the Lease change."""
    renew_deadline_seconds: float = 10.0
    """A leader that has not renewed for this long stops its work at once: below the lease
    duration, so it stops before another replica may start."""
    retry_period_seconds: float = 2.0
    """How often the leader renews and the others read the Lease."""


@dataclasses.dataclass(frozen=True)
class KubeSettings:
    """Talking to the API server over connections that may die silently (a load balancer's
    failover, a NAT timeout: open connections stop forwarding while new ones work)."""

    request_timeout_seconds: float = 10.0
    """Seconds every API call may wait to connect and then for each read; a GET that times out
    is tried once more on a new connection."""
    watch_seconds: int = 20
    """Seconds after which the API server ends each watch (its ``timeoutSeconds``; a bookmark
    comes 2 s before). The next resumes from the last resourceVersion."""
    watch_idle_seconds: float = 25.0
    """Seconds without a byte (event, bookmark or end) after which a watch's connection is taken
    for dead, dropped and the watch resumed on a new one. Above ``watch_seconds``."""
    inventory_stale_seconds: float = 60.0
    """Seconds the node watch may be down (counted from the last byte heard) before /readyz
    says not ready: decisions would rest on nodes that may be gone."""


@dataclasses.dataclass(frozen=True)
class Settings:
    mode: str = "enforce"
    """enforce (deny), warn (allow with a warning and an Event) or audit (Event and metric)."""
    mutate: bool = True
    """Add node affinity to pods so they land only on nodes that can run them."""
    mutate_workload_templates: bool = False
    """Also patch workload templates (GitOps tools would see drift, hence off)."""
    failure_policy: str = "open"
    """When a registry fails: open (allow with a warning) or closed (deny)."""
    excluded_namespaces: tuple[str, ...] = ("kube-system",)
    preferred_architectures: Mapping[str, int] = dataclasses.field(default_factory=dict)
    """Soft node-affinity weight per architecture, e.g. {"arm64": 50}."""
    global_pull_secret: str | None = None
    """``namespace/name`` of a dockerconfigjson secret used for every image."""
    registries: Mapping[str, registry.RegistrySettings] = dataclasses.field(default_factory=dict)
    cache: registry.CacheSettings = dataclasses.field(default_factory=registry.CacheSettings)
    registry_timeout: float = 2.5
    webhook: WebhookSettings = dataclasses.field(default_factory=WebhookSettings)
    metrics: MetricsSettings = dataclasses.field(default_factory=MetricsSettings)
    limits: LimitsSettings = dataclasses.field(default_factory=LimitsSettings)
    kube: KubeSettings = dataclasses.field(default_factory=KubeSettings)
    platforms: PlatformSettings = dataclasses.field(default_factory=PlatformSettings)
    skip: SkipSettings = dataclasses.field(default_factory=SkipSettings)
    capacity: CapacitySettings = dataclasses.field(default_factory=CapacitySettings)
    audit: AuditSettings = dataclasses.field(default_factory=AuditSettings)
    reports: ReportsSettings = dataclasses.field(default_factory=ReportsSettings)
    scheduling_gates: SchedulingGateSettings = dataclasses.field(
        default_factory=SchedulingGateSettings
    )
    credential_providers: CredentialProviderSettings = dataclasses.field(
        default_factory=CredentialProviderSettings
    )
    leader_election: LeaderElectionSettings = dataclasses.field(
        default_factory=LeaderElectionSettings
    )

    def client_settings(self) -> registry.ClientSettings:
        return registry.ClientSettings(
            registries=dict(self.registries), timeout=self.registry_timeout, max_retries=1
        )


def _expect(value: Any, kind: type | tuple[type, ...], key: str) -> Any:
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{key}: expected {names}, got {type(value).__name__}")
    return value


def _only(data: Mapping[str, Any], allowed: Set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(allowed))})")


def _registries(data: Any) -> dict[str, registry.RegistrySettings]:
    result = {}
    for host, entry in _expect(data, dict, "registries").items():
        where = f"registries.{host}"
        entry = _expect(entry or {}, dict, where)
        _only(entry, {"insecure", "caFile", "mirrors", "timeout"}, where)
        mirrors = _expect(entry.get("mirrors", []), list, f"{where}.mirrors")
        result[str(host)] = registry.RegistrySettings(
            insecure=_expect(entry.get("insecure", False), bool, f"{where}.insecure"),
            ca_file=_expect(entry.get("caFile"), (str, type(None)), f"{where}.caFile"),
            mirrors=tuple(_expect(m, str, f"{where}.mirrors[]") for m in mirrors),
            timeout=_expect(entry.get("timeout"), (int, float, type(None)), f"{where}.timeout"),
        )
    return result


MIN_BYTES = 4096
"""The smallest byte bound accepted: below it nothing real fits."""


def _at_least(value: Any, minimum: int, key: str) -> int:
    number = _expect(value, int, key)
    if number < minimum:
        raise ConfigError(f"{key}: must be at least {minimum}, got {number}")
    return int(number)


def _at_least_one(value: Any, key: str) -> int:
    number = _expect(value, int, key)
    if number < 1:
        raise ConfigError(f"{key}: must be at least 1, got {number}")
    return int(number)


def _limits(data: Any) -> LimitsSettings:
    limits = _expect(data, dict, "limits")
    sizes = {
        "decisionCacheBytes": "decision_cache_bytes",
        "templateBytes": "template_bytes",
        "pullSecretBytes": "pull_secret_bytes",
        "pullSecretCacheBytes": "pull_secret_cache_bytes",
        "apiObjectBytes": "api_object_bytes",
    }
    _only(limits, {"maxImagesPerReview", "maxConcurrentResolutions", *sizes}, "limits")
    d = LimitsSettings()
    return LimitsSettings(
        **{
            field: _at_least(limits.get(key, getattr(d, field)), MIN_BYTES, f"limits.{key}")
            for key, field in sizes.items()
        },
        max_images_per_review=_at_least_one(
            limits.get("maxImagesPerReview", d.max_images_per_review), "limits.maxImagesPerReview"
        ),
        max_concurrent_resolutions=_at_least_one(
            limits.get("maxConcurrentResolutions", d.max_concurrent_resolutions),
            "limits.maxConcurrentResolutions",
        ),
    )


def _kube(data: Any) -> KubeSettings:
    kube = _expect(data, dict, "kube")
    keys = {
        "requestTimeoutSeconds": "request_timeout_seconds",
        "watchIdleSeconds": "watch_idle_seconds",
        "inventoryStaleSeconds": "inventory_stale_seconds",
    }
    _only(kube, {"watchSeconds", *keys}, "kube")
    d = KubeSettings()
    settings = KubeSettings(
        **{
            field: _positive(kube.get(key, getattr(d, field)), f"kube.{key}")
            for key, field in keys.items()
        },
        watch_seconds=_at_least_one(kube.get("watchSeconds", d.watch_seconds), "kube.watchSeconds"),
    )
    if settings.watch_idle_seconds <= settings.watch_seconds:
        # A quiet, healthy watch hears nothing until its bookmark or its end.
        raise ConfigError("kube.watchIdleSeconds must be above kube.watchSeconds")
    return settings


def platform_taint(entry: Any, where: str) -> policy.PlatformTaint:
    """One ``platforms.taints`` entry (``{key, effects}``), validated."""
    entry = _expect(entry, dict, where)
    _only(entry, {"key", "effects"}, where)
    key = _expect(entry.get("key"), str, f"{where}.key")
    if not key:
        raise ConfigError(f"{where}.key: required")
    effects = _strings(entry.get("effects", ["NoSchedule", "PreferNoSchedule"]), f"{where}.effects")
    if not effects:
        raise ConfigError(f"{where}.effects: name at least one effect")
    for effect in effects:
        if effect not in _TAINT_EFFECTS:
            raise ConfigError(
                f"{where}.effects: expected {', '.join(_TAINT_EFFECTS)}, got {effect!r}"
            )
    return policy.PlatformTaint(key, frozenset(effects))


def _platforms(data: Any) -> PlatformSettings:
    section = _expect(data, dict, "platforms")
    _only(section, {"arm64RunsArm32", "amd64Runs386", "taints"}, "platforms")
    d = PlatformSettings()
    taints = d.taints
    if "taints" in section:
        entries = _expect(section["taints"], list, "platforms.taints")
        taints = tuple(
            platform_taint(entry, f"platforms.taints[{i}]") for i, entry in enumerate(entries)
        )
    return PlatformSettings(
        taints=taints,
        arm64_runs_arm32=_expect(
            section.get("arm64RunsArm32", d.arm64_runs_arm32), bool, "platforms.arm64RunsArm32"
        ),
        amd64_runs_386=_expect(
            section.get("amd64Runs386", d.amd64_runs_386), bool, "platforms.amd64Runs386"
        ),
    )


def _skip(data: Any) -> SkipSettings:
    section = _expect(data, dict, "skip")
    _only(section, {"allowed"}, "skip")
    allowed = _expect(section.get("allowed", SkipSettings.allowed), str, "skip.allowed")
    if allowed not in SKIP_POLICIES:
        raise ConfigError(
            f"skip.allowed: expected one of {', '.join(SKIP_POLICIES)}, got {allowed!r}"
        )
    return SkipSettings(allowed=allowed)


_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
MAX_NODE_GROUPS = 256


def _strings(value: Any, key: str) -> tuple[str, ...]:
    return tuple(_expect(item, str, f"{key}[]") for item in _expect(value, list, key))


def _node_group(entry: Any, where: str) -> NodeGroupSettings:
    entry = _expect(entry, dict, where)
    _only(entry, {"name", "platforms", "labels", "taints"}, where)
    name = _expect(entry.get("name"), str, f"{where}.name")
    found = _strings(entry.get("platforms"), f"{where}.platforms")
    if not found:
        raise ConfigError(f"{where}.platforms: name at least one os/arch")
    for spec in found:
        try:
            platforms.parse(spec)
        except platforms.InvalidPlatform as exc:
            raise ConfigError(f"{where}.platforms: {exc}") from None
    labels = _expect(entry.get("labels", {}), dict, f"{where}.labels")
    for key, value in labels.items():
        _expect(value, str, f"{where}.labels.{key}")
    taints = []
    for i, raw in enumerate(_expect(entry.get("taints", []), list, f"{where}.taints")):
        at = f"{where}.taints[{i}]"
        taint = _expect(raw, dict, at)
        _only(taint, {"key", "value", "effect"}, at)
        effect = _expect(taint.get("effect", "NoSchedule"), str, f"{at}.effect")
        if effect not in _TAINT_EFFECTS:
            raise ConfigError(f"{at}.effect: expected one of {', '.join(_TAINT_EFFECTS)}")
        taints.append(
            (
                _expect(taint.get("key"), str, f"{at}.key"),
                _expect(taint.get("value", ""), str, f"{at}.value"),
                effect,
            )
        )
    return NodeGroupSettings(
        name=name,
        platforms=found,
        labels={str(k): v for k, v in labels.items()},
        taints=tuple(taints),
    )


def _capacity(data: Any) -> CapacitySettings:
    section = _expect(data, dict, "capacity")
    _only(section, {"karpenter", "clusterAPI", "nodeGroups"}, "capacity")
    karpenter = _expect(section.get("karpenter", {}), dict, "capacity.karpenter")
    _only(
        karpenter,
        {"enabled", "defaultArchitectures", "defaultOperatingSystems", "wellKnownLabels"},
        "capacity.karpenter",
    )
    k = KarpenterSettings()
    capi = _expect(section.get("clusterAPI", {}), dict, "capacity.clusterAPI")
    _only(
        capi,
        {"enabled", "defaultArchitecture", "defaultOperatingSystem", "namespaces"},
        "capacity.clusterAPI",
    )
    c = ClusterAPISettings()
    groups = _expect(section.get("nodeGroups", []), list, "capacity.nodeGroups")
    if len(groups) > MAX_NODE_GROUPS:
        raise ConfigError(f"capacity.nodeGroups: more than {MAX_NODE_GROUPS} entries")
    parsed = tuple(_node_group(g, f"capacity.nodeGroups[{i}]") for i, g in enumerate(groups))
    names = [g.name for g in parsed]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise ConfigError(f"capacity.nodeGroups: name {duplicate!r} is used twice")
    return CapacitySettings(
        karpenter=KarpenterSettings(
            enabled=_expect(
                karpenter.get("enabled", k.enabled), bool, "capacity.karpenter.enabled"
            ),
            default_architectures=_strings(
                karpenter.get("defaultArchitectures", list(k.default_architectures)),
                "capacity.karpenter.defaultArchitectures",
            ),
            default_operating_systems=_strings(
                karpenter.get("defaultOperatingSystems", list(k.default_operating_systems)),
                "capacity.karpenter.defaultOperatingSystems",
            ),
            well_known_labels=_strings(
                karpenter.get("wellKnownLabels", []), "capacity.karpenter.wellKnownLabels"
            ),
        ),
        cluster_api=ClusterAPISettings(
            enabled=_expect(capi.get("enabled", c.enabled), bool, "capacity.clusterAPI.enabled"),
            default_architecture=_expect(
                capi.get("defaultArchitecture", c.default_architecture),
                str,
                "capacity.clusterAPI.defaultArchitecture",
            ),
            default_operating_system=_expect(
                capi.get("defaultOperatingSystem", c.default_operating_system),
                str,
                "capacity.clusterAPI.defaultOperatingSystem",
            ),
            namespaces=_strings(capi.get("namespaces", []), "capacity.clusterAPI.namespaces"),
        ),
        node_groups=parsed,
    )


MAX_AUDIT_RATE = 1000.0


def _positive(value: Any, key: str) -> float:
    number = float(_expect(value, (int, float), key))
    if not number > 0:
        raise ConfigError(f"{key}: must be above 0, got {value}")
    return number


def _audit(data: Any) -> AuditSettings:
    section = _expect(data, dict, "audit")
    _only(
        section,
        {"enabled", "periodSeconds", "requestsPerSecond", "burst", "verifyImages"},
        "audit",
    )
    d = AuditSettings()
    period = _positive(section.get("periodSeconds", d.period_seconds), "audit.periodSeconds")
    if period < 10:
        raise ConfigError(f"audit.periodSeconds: at least 10, got {period:g}")
    rate = _positive(
        section.get("requestsPerSecond", d.requests_per_second), "audit.requestsPerSecond"
    )
    if rate > MAX_AUDIT_RATE:
        raise ConfigError(f"audit.requestsPerSecond: at most {MAX_AUDIT_RATE:g}, got {rate:g}")
    return AuditSettings(
        enabled=_expect(section.get("enabled", d.enabled), bool, "audit.enabled"),
        period_seconds=period,
        requests_per_second=rate,
        burst=_at_least_one(section.get("burst", d.burst), "audit.burst"),
        verify_images=_expect(
            section.get("verifyImages", d.verify_images), bool, "audit.verifyImages"
        ),
    )


def _scheduling_gates(data: Any) -> SchedulingGateSettings:
    section = _expect(data, dict, "schedulingGates")
    _only(section, {"mode", "retrySeconds", "maxConcurrent"}, "schedulingGates")
    d = SchedulingGateSettings()
    mode = section.get("mode", d.mode)
    if mode is False:
        mode = "off"  # YAML 1.1 reads an unquoted `off` as false
    mode = _expect(mode, str, "schedulingGates.mode")
    if mode not in GATE_MODES:
        raise ConfigError(
            f"schedulingGates.mode: expected one of {', '.join(GATE_MODES)}, got {mode!r}"
        )
    retry = float(
        _expect(
            section.get("retrySeconds", d.retry_seconds),
            (int, float),
            "schedulingGates.retrySeconds",
        )
    )
    if retry <= 0:
        raise ConfigError(f"schedulingGates.retrySeconds: must be above 0, got {retry:g}")
    concurrent = _expect(
        section.get("maxConcurrent", d.max_concurrent), int, "schedulingGates.maxConcurrent"
    )
    if not 1 <= concurrent <= 64:
        raise ConfigError(f"schedulingGates.maxConcurrent: must be 1..64, got {concurrent}")
    return SchedulingGateSettings(mode=mode, retry_seconds=retry, max_concurrent=concurrent)


def _reports(data: Any) -> ReportsSettings:
    section = _expect(data, dict, "reports")
    _only(section, {"enabled"}, "reports")
    return ReportsSettings(
        enabled=_expect(section.get("enabled", ReportsSettings.enabled), bool, "reports.enabled")
    )


def _credential_providers(data: Any) -> CredentialProviderSettings:
    where = "credentialProviders"
    section = _expect(data, dict, where)
    d = CredentialProviderSettings()
    sizes = {
        "outputBytes": "output_bytes",
        "stderrBytes": "stderr_bytes",
        "cacheBytes": "cache_bytes",
        "tokenCacheBytes": "token_cache_bytes",
    }
    _only(
        section,
        {"enabled", "config", "binDir", "timeoutSeconds", "maxConcurrentRuns", *sizes},
        where,
    )
    return CredentialProviderSettings(
        enabled=_expect(section.get("enabled", d.enabled), bool, f"{where}.enabled"),
        config=_expect(section.get("config", d.config), str, f"{where}.config"),
        bin_dir=_expect(section.get("binDir", d.bin_dir), str, f"{where}.binDir"),
        timeout_seconds=_positive(
            section.get("timeoutSeconds", d.timeout_seconds), f"{where}.timeoutSeconds"
        ),
        max_concurrent_runs=_at_least_one(
            section.get("maxConcurrentRuns", d.max_concurrent_runs), f"{where}.maxConcurrentRuns"
        ),
        **{
            field: _at_least(section.get(key, getattr(d, field)), MIN_BYTES, f"{where}.{key}")
            for key, field in sizes.items()
        },
    )


def _leader_election(data: Any) -> LeaderElectionSettings:
    where = "leaderElection"
    section = _expect(data, dict, where)
    _only(
        section,
        {
            "enabled",
            "leaseName",
            "namespace",
            "leaseDurationSeconds",
            "renewDeadlineSeconds",
            "retryPeriodSeconds",
        },
        where,
    )
    d = LeaderElectionSettings()
    name = _expect(section.get("leaseName", d.lease_name), str, f"{where}.leaseName")
    if not name:
        raise ConfigError(f"{where}.leaseName: must not be empty")
    namespace = _expect(
        section.get("namespace", d.namespace), (str, type(None)), f"{where}.namespace"
    )
    duration = _expect(
        section.get("leaseDurationSeconds", d.lease_duration_seconds),
        int,
        f"{where}.leaseDurationSeconds",
    )
    renew = _positive(
        section.get("renewDeadlineSeconds", d.renew_deadline_seconds),
        f"{where}.renewDeadlineSeconds",
    )
    retry = _positive(
        section.get("retryPeriodSeconds", d.retry_period_seconds), f"{where}.retryPeriodSeconds"
    )
    # client-go's rules: a leader must step down before its Lease can pass to another, and
    # have more than one try at renewing before it does.
    if not duration > renew:
        raise ConfigError(
            f"{where}.leaseDurationSeconds ({duration}) must be above renewDeadlineSeconds "
            f"({renew:g})"
        )
    if not renew > retry:
        raise ConfigError(
            f"{where}.renewDeadlineSeconds ({renew:g}) must be above retryPeriodSeconds ({retry:g})"
        )
    return LeaderElectionSettings(
        enabled=_expect(section.get("enabled", d.enabled), bool, f"{where}.enabled"),
        lease_name=name,
        namespace=namespace or None,
        lease_duration_seconds=duration,
        renew_deadline_seconds=renew,
        retry_period_seconds=retry,
    )


TOP_LEVEL_KEYS = frozenset(
    {
        "mode",
        "mutate",
        "mutateWorkloadTemplates",
        "failurePolicy",
        "excludedNamespaces",
        "preferredArchitectures",
        "globalPullSecret",
        "registries",
        "cache",
        "registryTimeout",
        "webhook",
        "metrics",
        "limits",
        "kube",
        "platforms",
        "skip",
        "capacity",
        "audit",
        "reports",
        "schedulingGates",
        "credentialProviders",
        "leaderElection",
    }
)
"""Every key a configuration file may hold at its top (the README's block names each)."""


def from_mapping(data: Mapping[str, Any]) -> Settings:
    _only(data, TOP_LEVEL_KEYS, "")
    mode = _expect(data.get("mode", "enforce"), str, "mode")
    if mode not in MODES:
        raise ConfigError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    failure = _expect(data.get("failurePolicy", "open"), str, "failurePolicy")
    if failure not in FAILURE_POLICIES:
        raise ConfigError(
            f"failurePolicy: expected one of {', '.join(FAILURE_POLICIES)}, got {failure!r}"
        )
    excluded = _expect(data.get("excludedNamespaces", ["kube-system"]), list, "excludedNamespaces")
    preferred = _expect(data.get("preferredArchitectures", {}), dict, "preferredArchitectures")
    for arch, weight in preferred.items():
        where = f"preferredArchitectures.{arch}"
        if not 1 <= _expect(weight, int, where) <= 100:
            raise ConfigError(f"{where}: weight must be 1..100, got {weight}")
    secret = _expect(data.get("globalPullSecret"), (str, type(None)), "globalPullSecret")
    if secret is not None and secret.count("/") != 1:
        raise ConfigError(f"globalPullSecret: expected namespace/name, got {secret!r}")

    cache = _expect(data.get("cache", {}), dict, "cache")
    _only(cache, {"digestCacheSize", "tagCacheSize", "tagTTL", "failureTTL"}, "cache")
    defaults = registry.CacheSettings()
    cache_settings = registry.CacheSettings(
        digest_cache_size=_expect(
            cache.get("digestCacheSize", defaults.digest_cache_size), int, "cache.digestCacheSize"
        ),
        tag_cache_size=_expect(
            cache.get("tagCacheSize", defaults.tag_cache_size), int, "cache.tagCacheSize"
        ),
        tag_ttl=float(_expect(cache.get("tagTTL", defaults.tag_ttl), (int, float), "cache.tagTTL")),
        failure_ttl=float(
            _expect(cache.get("failureTTL", defaults.failure_ttl), (int, float), "cache.failureTTL")
        ),
    )
    webhook = _expect(data.get("webhook", {}), dict, "webhook")
    _only(
        webhook,
        {
            "port",
            "address",
            "certFile",
            "keyFile",
            "budgetSeconds",
            "timeoutSeconds",
            "reloadSeconds",
            "clientCAFile",
            "clientNames",
        },
        "webhook",
    )
    client_names = _expect(webhook.get("clientNames", []), list, "webhook.clientNames")
    w = WebhookSettings()
    webhook_settings = WebhookSettings(
        port=_expect(webhook.get("port", w.port), int, "webhook.port"),
        address=_expect(webhook.get("address", w.address), str, "webhook.address"),
        cert_file=_expect(webhook.get("certFile"), (str, type(None)), "webhook.certFile"),
        key_file=_expect(webhook.get("keyFile"), (str, type(None)), "webhook.keyFile"),
        budget_seconds=float(
            _expect(
                webhook.get("budgetSeconds", w.budget_seconds),
                (int, float),
                "webhook.budgetSeconds",
            )
        ),
        timeout_seconds=_expect(
            webhook.get("timeoutSeconds", w.timeout_seconds), int, "webhook.timeoutSeconds"
        ),
        reload_seconds=float(
            _expect(
                webhook.get("reloadSeconds", w.reload_seconds),
                (int, float),
                "webhook.reloadSeconds",
            )
        ),
        client_ca_file=_expect(
            webhook.get("clientCAFile"), (str, type(None)), "webhook.clientCAFile"
        ),
        client_names=tuple(_expect(n, str, "webhook.clientNames[]") for n in client_names),
    )
    if webhook_settings.client_names and webhook_settings.client_ca_file is None:
        # Names are read from a verified certificate; without a CA nothing is verified.
        raise ConfigError("webhook.clientNames needs webhook.clientCAFile")
    if webhook_settings.budget_seconds >= webhook_settings.timeout_seconds:
        raise ConfigError("webhook.budgetSeconds must be below webhook.timeoutSeconds")
    metrics = _expect(data.get("metrics", {}), dict, "metrics")
    _only(metrics, {"port", "address"}, "metrics")
    m = MetricsSettings()
    return Settings(
        mode=mode,
        mutate=_expect(data.get("mutate", True), bool, "mutate"),
        mutate_workload_templates=_expect(
            data.get("mutateWorkloadTemplates", False), bool, "mutateWorkloadTemplates"
        ),
        failure_policy=failure,
        excluded_namespaces=tuple(_expect(n, str, "excludedNamespaces[]") for n in excluded),
        preferred_architectures=dict(preferred),
        global_pull_secret=secret,
        registries=_registries(data.get("registries", {})),
        cache=cache_settings,
        registry_timeout=float(
            _expect(data.get("registryTimeout", 2.5), (int, float), "registryTimeout")
        ),
        webhook=webhook_settings,
        metrics=MetricsSettings(
            port=_expect(metrics.get("port", m.port), int, "metrics.port"),
            address=_expect(metrics.get("address", m.address), str, "metrics.address"),
        ),
        limits=_limits(data.get("limits", {})),
        kube=_kube(data.get("kube", {})),
        platforms=_platforms(data.get("platforms", {})),
        skip=_skip(data.get("skip", {})),
        capacity=_capacity(data.get("capacity", {})),
        audit=_audit(data.get("audit", {})),
        reports=_reports(data.get("reports", {})),
        scheduling_gates=_scheduling_gates(data.get("schedulingGates", {})),
        credential_providers=_credential_providers(data.get("credentialProviders", {})),
        leader_election=_leader_election(data.get("leaderElection", {})),
    )


def load(path: str | Path | None) -> Settings:
    if path is None:
        return Settings()
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if data is None:
        return Settings()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping")
    try:
        return from_mapping(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
