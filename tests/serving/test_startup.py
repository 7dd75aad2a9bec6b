"""handlers.startup wires archwarden's own webhook server (no cluster: the node and namespace
watches only meet a closed port, 127.0.0.1:1, until clean-up cancels them)."""

from __future__ import annotations

import ssl
from pathlib import Path

import kopf
import pytest
import yaml
from aiohttp import web

from archwarden import handlers, registry, settings, webhook_server
from tests.registry import faults
from tests.support.pki import write_tls_files
from tests.support.registry import free_port

# A kubeconfig that is never used for a request: startup only builds the client.
KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
    "users": [{"name": "u", "user": {"token": "unused"}}],
    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
    "current-context": "x",
}


async def test_the_webhook_server_accepts_big_reviews_and_counts_refusals(tmp_path: Path) -> None:
    tls = write_tls_files(tmp_path / "tls")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(KUBECONFIG))
    config = settings.Settings(
        webhook=settings.WebhookSettings(
            address="127.0.0.1", cert_file=str(tls.cert_file), key_file=str(tls.key_file)
        ),
        metrics=settings.MetricsSettings(address="127.0.0.1", port=free_port()),
    )
    runtime = handlers.Runtime(config, kubeconfig=str(kubeconfig))
    operator_settings = kopf.OperatorSettings()
    await handlers.startup(settings=operator_settings, memo={"runtime": runtime})
    try:
        server = operator_settings.admission.server
        assert isinstance(server, webhook_server.WebhookServer)
        assert server.max_review_bytes == webhook_server.MAX_REVIEW_BYTES
        assert server.meters is runtime.metrics
        assert server.client_ca_file is None  # client authentication is opt-in
    finally:
        await handlers.cleanup(memo={"runtime": runtime})


async def test_the_client_ca_and_names_reach_the_webhook_server(tmp_path: Path) -> None:
    tls = write_tls_files(tmp_path / "tls")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(KUBECONFIG))
    config = settings.Settings(
        webhook=settings.WebhookSettings(
            address="127.0.0.1",
            cert_file=str(tls.cert_file),
            key_file=str(tls.key_file),
            client_ca_file=str(tls.ca_file),
            client_names=("kube-apiserver",),
            reload_seconds=7.0,
        ),
        metrics=settings.MetricsSettings(address="127.0.0.1", port=free_port()),
    )
    runtime = handlers.Runtime(config, kubeconfig=str(kubeconfig))
    operator_settings = kopf.OperatorSettings()
    await handlers.startup(settings=operator_settings, memo={"runtime": runtime})
    try:
        server = operator_settings.admission.server
        assert isinstance(server, webhook_server.WebhookServer)
        assert server.client_ca_file == str(tls.ca_file)
        assert server.client_names == {"kube-apiserver"}
        assert server.verify_mode == ssl.CERT_REQUIRED
        assert server.file_check_interval == 7.0
    finally:
        await handlers.cleanup(memo={"runtime": runtime})


async def test_the_byte_bounds_reach_what_run_builds(tmp_path: Path) -> None:
    """limits.* of issue 18 are read where the memory is kept, not left at their defaults."""
    tls = write_tls_files(tmp_path / "tls")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(KUBECONFIG))
    limits = settings.LimitsSettings(
        decision_cache_bytes=123_456,
        pull_secret_bytes=65_536,
        pull_secret_cache_bytes=654_321,
        api_object_bytes=2_000_000,
    )
    config = settings.Settings(
        webhook=settings.WebhookSettings(
            address="127.0.0.1", cert_file=str(tls.cert_file), key_file=str(tls.key_file)
        ),
        metrics=settings.MetricsSettings(address="127.0.0.1", port=free_port()),
        limits=limits,
    )
    runtime = handlers.Runtime(config, kubeconfig=str(kubeconfig))
    await handlers.startup(settings=kopf.OperatorSettings(), memo={"runtime": runtime})
    try:
        assert runtime.admission is not None
        assert runtime.admission._decisions.maxsize == 123_456
        credentials = runtime.admission.credentials
        secrets = getattr(credentials, "__self__", None)
        assert secrets is not None
        assert secrets._secret_bytes == 65_536 and secrets._cache.maxsize == 654_321
        assert runtime.watches and {w.max_object_bytes for w in runtime.watches} == {2_000_000}
    finally:
        await handlers.cleanup(memo={"runtime": runtime})


async def test_lookups_refused_by_a_held_registry_are_counted_by_registry(
    tmp_path: Path,
) -> None:
    async def throttled(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=429, headers={"Retry-After": "1000000000"})

    tls = write_tls_files(tmp_path / "tls")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(KUBECONFIG))
    async with faults.fault_server(throttled) as held:
        config = settings.Settings(
            webhook=settings.WebhookSettings(
                address="127.0.0.1", cert_file=str(tls.cert_file), key_file=str(tls.key_file)
            ),
            metrics=settings.MetricsSettings(address="127.0.0.1", port=free_port()),
            registries={held.host: registry.RegistrySettings(insecure=True)},
        )
        runtime = handlers.Runtime(config, kubeconfig=str(kubeconfig))
        await handlers.startup(settings=kopf.OperatorSettings(), memo={"runtime": runtime})
        try:
            assert runtime.admission is not None
            resolver = runtime.admission.resolver
            with pytest.raises(registry.RateLimited):
                await resolver.resolve(f"{held.host}/team/first:1")
            for i in range(3):
                with pytest.raises(registry.RegistryHeld):
                    await resolver.resolve(f"{held.host}/team/app{i}:1")
        finally:
            await handlers.cleanup(memo={"runtime": runtime})
        assert len(held.requests) == 1
    counted = runtime.metrics.registry.get_sample_value(
        "archwarden_registry_held_lookups_total", {"registry": held.host}
    )
    assert counted == 3
    # Hosts nobody configured share one label, as for archwarden_registry_requests_total.
    assert config.client_settings().metric_label("elsewhere.example") == "other"


def _namespace(name: str, labels: dict[str, str]) -> dict[str, object]:
    return {"metadata": {"name": name, "labels": labels}}


def test_namespace_labels_feed_the_mode_and_the_skip_permission() -> None:
    runtime = handlers.Runtime(settings.Settings())
    labels = {"archwarden.io/mode": "warn", "archwarden.io/allow-skip": "true"}
    runtime.on_namespace(_namespace("team", labels))
    runtime.on_namespace(_namespace("other", labels))
    assert runtime.namespace_modes == {"team": "warn", "other": "warn"}
    assert runtime.skip_namespaces == {"team", "other"}
    runtime.on_namespace(_namespace("team", {}))
    assert runtime.namespace_modes == {"other": "warn"} and runtime.skip_namespaces == {"other"}
    # A namespace deleted while the stream was down is missing from the next complete list.
    runtime.on_namespaces_listed({"team"})
    assert runtime.namespace_modes == {} and runtime.skip_namespaces == set()
    runtime.on_namespace(_namespace("other", labels))
    runtime.on_namespace_deleted(_namespace("other", {}))
    assert runtime.namespace_modes == {} and runtime.skip_namespaces == set()
