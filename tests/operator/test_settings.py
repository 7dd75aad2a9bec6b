from __future__ import annotations

from pathlib import Path

import pytest

from archwarden import platforms, policy, registry, settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_without_a_file() -> None:
    config = settings.load(None)
    assert (config.mode, config.failure_policy, config.mutate) == ("enforce", "open", True)
    assert config.excluded_namespaces == ("kube-system",)
    assert config.platforms.fallbacks() == platforms.DEFAULT_FALLBACKS
    assert not config.platforms.arm64_runs_arm32 and config.platforms.amd64_runs_386
    assert (config.webhook.port, config.metrics.port) == (9443, 8080)
    assert config.webhook.budget_seconds < config.webhook.timeout_seconds


def test_platform_taints_default_to_the_arch_taint_and_can_be_set(tmp_path: Path) -> None:
    assert settings.load(None).platforms.taints == (
        policy.PlatformTaint("kubernetes.io/arch", frozenset({"NoSchedule", "PreferNoSchedule"})),
    )
    config = settings.load(
        write(
            tmp_path,
            "platforms:\n  taints:\n    - {key: example.com/arch, effects: [NoExecute]}\n"
            "    - {key: kubernetes.io/arch}\n",
        )
    )
    assert config.platforms.taints == (
        policy.PlatformTaint("example.com/arch", frozenset({"NoExecute"})),
        policy.PlatformTaint("kubernetes.io/arch", frozenset({"NoSchedule", "PreferNoSchedule"})),
    )
    assert settings.load(write(tmp_path, "platforms: {taints: []}")).platforms.taints == ()


def test_every_documented_key(tmp_path: Path) -> None:
    config = settings.load(
        write(
            tmp_path,
            """
mode: warn
mutate: false
failurePolicy: closed
excludedNamespaces: [kube-system, infra]
preferredArchitectures: {arm64: 50}
globalPullSecret: infra/regcred
registries:
  registry.local:5000: {insecure: true, mirrors: [mirror.local]}
  ghcr.io: {caFile: /etc/ssl/ghcr.pem, timeout: 4}
cache: {digestCacheSize: 10, tagCacheSize: 20, tagTTL: 60, failureTTL: 2}
webhook: {port: 10443, budgetSeconds: 2, timeoutSeconds: 5}
metrics: {port: 9090}
limits: {maxImagesPerReview: 10, maxConcurrentResolutions: 2, templateBytes: 65536}
kube: {requestTimeoutSeconds: 3, watchSeconds: 50, watchIdleSeconds: 55.5,
       inventoryStaleSeconds: 90}
platforms: {arm64RunsArm32: true, amd64Runs386: false}
skip: {allowed: labelledNamespaces}
capacity:
  karpenter: {enabled: false, defaultArchitectures: [amd64], wellKnownLabels: [k.aws/family]}
  clusterAPI: {defaultArchitecture: arm64, namespaces: [capi-system]}
  nodeGroups:
    - name: graviton
      platforms: [linux/arm64]
      labels: {team: edge}
      taints: [{key: arm, effect: NoExecute}]
""",
        )
    )
    assert config.mode == "warn" and config.failure_policy == "closed" and not config.mutate
    assert config.excluded_namespaces == ("kube-system", "infra")
    assert config.preferred_architectures == {"arm64": 50}
    assert config.global_pull_secret == "infra/regcred"
    assert config.registries["registry.local:5000"] == registry.RegistrySettings(
        insecure=True, mirrors=("mirror.local",)
    )
    assert config.registries["ghcr.io"].ca_file == "/etc/ssl/ghcr.pem"
    assert config.cache == registry.CacheSettings(
        digest_cache_size=10, tag_cache_size=20, tag_ttl=60.0, failure_ttl=2.0
    )
    assert (config.webhook.port, config.metrics.port) == (10443, 9090)
    assert config.limits == settings.LimitsSettings(
        max_images_per_review=10, max_concurrent_resolutions=2, template_bytes=65536
    )
    assert config.kube == settings.KubeSettings(
        request_timeout_seconds=3.0,
        watch_seconds=50,
        watch_idle_seconds=55.5,
        inventory_stale_seconds=90.0,
    )
    assert config.platforms.fallbacks() == platforms.Fallbacks(
        arm32_on_arm64=True, i386_on_amd64=False
    )
    assert config.skip == settings.SkipSettings(allowed="labelledNamespaces")
    assert config.capacity.karpenter == settings.KarpenterSettings(
        enabled=False, default_architectures=("amd64",), well_known_labels=("k.aws/family",)
    )
    assert config.capacity.cluster_api.default_architecture == "arm64"
    assert config.capacity.cluster_api.namespaces == ("capi-system",)
    assert config.capacity.node_groups == (
        settings.NodeGroupSettings(
            "graviton", ("linux/arm64",), {"team": "edge"}, (("arm", "", "NoExecute"),)
        ),
    )
    client = config.client_settings()
    assert client.for_host("registry.local:5000").insecure


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mode: strict", "mode: expected one of enforce, warn, audit, got 'strict'"),
        ("mdoe: warn", "unknown key mdoe"),
        ("failurePolicy: maybe", "failurePolicy: expected one of open, closed"),
        (
            "preferredArchitectures: {arm64: 500}",
            "preferredArchitectures.arm64: weight must be 1..100",
        ),
        ("globalPullSecret: regcred", "globalPullSecret: expected namespace/name"),
        ("registries: {r.io: {insecure: yes-please}}", "registries.r.io.insecure: expected bool"),
        (
            "webhook: {budgetSeconds: 6}",
            "webhook.budgetSeconds must be below webhook.timeoutSeconds",
        ),
        ("cache: {tagTTL: true}", "cache.tagTTL: expected a number"),
        ("webhook: {clientNames: [a]}", "webhook.clientNames needs webhook.clientCAFile"),
        ("webhook: {clientCAFile: ca.pem, clientNames: a}", "webhook.clientNames: expected list"),
        (
            "webhook: {clientCAFile: ca.pem, clientNames: [1]}",
            "webhook.clientNames[]: expected str",
        ),
        ("limits: {maxImagesPerReview: 0}", "limits.maxImagesPerReview: must be at least 1"),
        ("limits: {maxImages: 3}", "unknown key limits.maxImages"),
        ("limits: {decisionCacheBytes: 100}", "limits.decisionCacheBytes: must be at least 4096"),
        ("limits: {templateBytes: 1.5}", "limits.templateBytes: expected int"),
        ("capacity: {clusterAPI: {namespaces: a}}", "capacity.clusterAPI.namespaces: expected"),
        ("kube: {requestTimeoutSeconds: 0}", "kube.requestTimeoutSeconds: must be above 0"),
        ("kube: {watchSeconds: 1.5}", "kube.watchSeconds: expected int"),
        (
            # The default idle deadline (25 s): a quiet watch would be taken for a dead one.
            "kube: {watchSeconds: 25}",
            "kube.watchIdleSeconds must be above kube.watchSeconds",
        ),
        ("kube: {idleSeconds: 5}", "unknown key kube.idleSeconds"),
        ("platforms: {arm64RunsArm32: yes-please}", "platforms.arm64RunsArm32: expected bool"),
        ("platforms: {taints: {key: a}}", "platforms.taints: expected list"),
        ("platforms: {taints: [{effects: [NoSchedule]}]}", "platforms.taints[0].key: expected str"),
        ("platforms: {taints: [{key: ''}]}", "platforms.taints[0].key: required"),
        ("platforms: {taints: [{key: a, effects: []}]}", "platforms.taints[0].effects: name at"),
        ("platforms: {taints: [{key: a, effects: [Soon]}]}", "taints[0].effects: expected"),
        ("platforms: {taints: [{key: a, value: arm64}]}", "unknown key platforms.taints[0].value"),
        ("skip: {allowed: admins}", "skip.allowed: expected one of everyone, labelledNamespaces"),
        ("capacity: {karpenter: {enabeld: true}}", "unknown key capacity.karpenter.enabeld"),
        (
            "capacity: {nodeGroups: [{name: a, platforms: []}]}",
            "capacity.nodeGroups[0].platforms: name at least one os/arch",
        ),
        (
            "capacity: {nodeGroups: [{name: a, platforms: [linux//arm64]}]}",
            "capacity.nodeGroups[0].platforms: invalid platform",
        ),
        (
            "capacity: {nodeGroups: [{name: a, platforms: [arm64], taints: [{effect: Soon}]}]}",
            "capacity.nodeGroups[0].taints[0].effect: expected one of",
        ),
        (
            "capacity: {nodeGroups: [{name: a, platforms: [arm64]}, {name: a, platforms: [arm]}]}",
            "name 'a' is used twice",
        ),
        ("- a list", "the configuration must be a mapping"),
        ("mode: [unclosed", "not valid YAML at line 1"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(settings.ConfigError) as caught:
        settings.load(write(tmp_path, text))
    assert message in str(caught.value)
    assert str(caught.value).startswith(str(tmp_path / "config.yaml"))


def test_client_authentication_is_off_unless_a_ca_is_given(tmp_path: Path) -> None:
    assert settings.load(None).webhook.client_ca_file is None
    config = settings.load(
        write(tmp_path, "webhook: {clientCAFile: /ca/ca.crt, clientNames: [apiserver]}")
    )
    assert config.webhook.client_ca_file == "/ca/ca.crt"
    assert config.webhook.client_names == ("apiserver",)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(settings.ConfigError, match=r"cannot read .*No such file"):
        settings.load(tmp_path / "absent.yaml")


def test_audit_and_reports_settings() -> None:
    parsed = settings.from_mapping(
        {
            "audit": {"periodSeconds": 600, "requestsPerSecond": 0.5, "burst": 2},
            "reports": {"enabled": False},
        }
    )
    assert parsed.audit.period_seconds == 600 and parsed.audit.requests_per_second == 0.5
    assert parsed.audit.burst == 2 and parsed.audit.enabled and not parsed.audit.verify_images
    assert parsed.reports.enabled is False
    for bad, named in (
        ({"audit": {"requestsPerSecond": 0}}, "audit.requestsPerSecond"),
        ({"audit": {"periodSeconds": 1}}, "audit.periodSeconds"),
        ({"audit": {"burst": 0}}, "audit.burst"),
        ({"audit": {"budget": 1}}, "audit.budget"),
    ):
        with pytest.raises(settings.ConfigError, match=named.replace(".", r"\.")):
            settings.from_mapping(bad)


def test_scheduling_gate_settings() -> None:
    assert settings.load(None).scheduling_gates.mode == "off"
    parsed = settings.from_mapping(
        {"schedulingGates": {"mode": "policy", "retrySeconds": 2, "maxConcurrent": 8}}
    )
    assert parsed.scheduling_gates == settings.SchedulingGateSettings("policy", 2.0, 8)
    # `mode: off` unquoted is YAML's false.
    assert (
        settings.from_mapping({"schedulingGates": {"mode": False}}).scheduling_gates.mode == "off"
    )
    for bad, named in (
        ({"schedulingGates": {"mode": "always"}}, "schedulingGates.mode: expected one of off"),
        ({"schedulingGates": {"retrySeconds": 0}}, "schedulingGates.retrySeconds"),
        ({"schedulingGates": {"maxConcurrent": 0}}, "schedulingGates.maxConcurrent"),
        ({"schedulingGates": {"gate": "x"}}, "unknown key schedulingGates.gate"),
    ):
        with pytest.raises(settings.ConfigError, match=named.replace(".", r"\.")):
            settings.from_mapping(bad)


def test_credential_providers_block() -> None:
    loaded = settings.from_mapping(
        {
            "credentialProviders": {
                "enabled": True,
                "config": "/c",
                "binDir": "/b",
                "outputBytes": 8192,
            }
        }
    ).credential_providers
    assert (loaded.enabled, loaded.config, loaded.bin_dir) == (True, "/c", "/b")
    assert loaded.limits().output_bytes == 8192
    assert settings.Settings().credential_providers.enabled is False
    for section, error in [
        ({"binDri": "/b"}, "unknown key credentialProviders.binDri"),
        ({"outputBytes": 10}, "credentialProviders.outputBytes: must be at least 4096"),
        ({"timeoutSeconds": 0}, "credentialProviders.timeoutSeconds: must be above 0"),
    ]:
        with pytest.raises(settings.ConfigError, match=error):
            settings.from_mapping({"credentialProviders": section})


def test_leader_election_block() -> None:
    default = settings.load(None).leader_election
    assert default.enabled
    assert (
        default.lease_duration_seconds,
        default.renew_deadline_seconds,
        default.retry_period_seconds,
    ) == (15, 10.0, 2.0)
    loaded = settings.from_mapping(
        {
            "leaderElection": {
                "enabled": False,
                "leaseName": "aw",
                "namespace": "ops",
                "leaseDurationSeconds": 4,
                "renewDeadlineSeconds": 3,
                "retryPeriodSeconds": 0.5,
            }
        }
    ).leader_election
    assert loaded == settings.LeaderElectionSettings(False, "aw", "ops", 4, 3.0, 0.5)
    for section, error in [
        ({"leaseDurationSeconds": 10}, r"leaseDurationSeconds \(10\) must be above renewDeadline"),
        ({"retryPeriodSeconds": 10}, r"renewDeadlineSeconds \(10\) must be above retryPeriod"),
        ({"leaseDurationSeconds": 15.5}, "leaseDurationSeconds: expected int"),
        ({"retryPeriodSeconds": 0}, "retryPeriodSeconds: must be above 0"),
        ({"leaseName": ""}, "leaseName: must not be empty"),
        ({"lease": "x"}, "unknown key leaderElection.lease"),
    ]:
        with pytest.raises(settings.ConfigError, match=error):
            settings.from_mapping({"leaderElection": section})
