"""Node-identity registries: an image readable only with what a kubelet credential provider
plugin returns, no pull secret anywhere.

The plugin is the project's own ``hack/credprovider/archwarden-test-credential-provider`` (it
speaks the documented protocol and knows nothing of archwarden); the registry is the real
distribution 2.8 with token auth, whose token server takes the plugin's username and password.
The same plugin and config are what the real node's kubelet is given (tests/cluster).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from archwarden import admission, policy, registry, settings
from tests.registry import helpers
from tests.registry.test_inspect_cli import run_cli
from tests.support.images import Seeder, unique_repo
from tests.support.registry import RegistryServer
from tests.support.token_server import TokenServer

pytestmark = pytest.mark.registry

PLUGIN = Path(__file__).parents[2] / "hack/credprovider/archwarden-test-credential-provider"
NAME = "archwarden-test-credential-provider"


def node_config(tmp_path: Path, server: RegistryServer, *extra: str, **fields: Any) -> Path:
    """A bin dir holding the plugin, a token file holding the registry's password, and the
    CredentialProviderConfig naming them, as the node would have them."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    shutil.copy(PLUGIN, bin_dir / NAME)
    token_file = tmp_path / "node-token"
    token_file.write_text(server.password or "")
    provider = {
        "name": NAME,
        "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
        "matchImages": [server.host],
        "defaultCacheDuration": "1m",
        "args": ["--username", server.username, "--log", str(tmp_path / "plugin.log"), *extra],
        "env": [{"name": "ARCHWARDEN_TEST_PROVIDER_TOKEN_FILE", "value": str(token_file)}],
        **fields,
    }
    config = tmp_path / "credential-providers.yaml"
    config.write_text(
        json.dumps(
            {
                "apiVersion": "kubelet.config.k8s.io/v1",
                "kind": "CredentialProviderConfig",
                "providers": [provider],
            }
        )
    )
    return config


def plugin_log(tmp_path: Path) -> list[dict[str, Any]]:
    log = tmp_path / "plugin.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def token_registry(registry_factory: Callable[..., RegistryServer]) -> RegistryServer:
    """Token auth that gives anonymous callers nothing: only the node's credentials read."""
    password = secrets.token_urlsafe(16)
    tokens = TokenServer(username="node", password=password, allow_anonymous=False)
    return registry_factory("token", username="node", password=password, token_server=tokens)


@pytest.fixture
def private_image(
    token_registry: RegistryServer, seeder_for: Callable[[Any], Seeder]
) -> tuple[str, str]:
    repo = unique_repo("nodeid")
    seeder_for(token_registry).push_multiarch(repo, "1", ["linux/amd64", "linux/arm64"])
    return f"{token_registry.host}/{repo}:1", repo


def realm(server: RegistryServer) -> str:
    assert server.token_server is not None
    return f"127.0.0.1:{server.token_server.port}"


async def test_inspect_reads_it_with_the_node_plugin_and_fails_without(
    token_registry: RegistryServer, private_image: tuple[str, str], tmp_path: Path
) -> None:
    image, repo = private_image
    insecure = ["--insecure-registry", token_registry.host, "--insecure-registry"]
    insecure.append(realm(token_registry))
    code, _, _, stderr = await run_cli("--json", *insecure, image)
    assert code == 1
    assert stderr.count("\n") == 1
    assert stderr == (
        f"archwarden: error: registry {token_registry.host}: token server refused the "
        f"credentials (HTTP 401): {repo}:1\n"
    )

    config = node_config(tmp_path, token_registry)
    code, data, _, stderr = await run_cli(
        "--json",
        *insecure,
        "--image-credential-provider-config",
        str(config),
        "--image-credential-provider-bin-dir",
        str(tmp_path / "bin"),
        image,
    )
    assert (code, stderr) == (0, "")
    assert data is not None and data[0]["platforms"] == ["linux/amd64", "linux/arm64"]
    # The kubelet's request: the repository without its tag, no token (not in token mode).
    assert plugin_log(tmp_path) == [
        {"annotations": {}, "image": f"{token_registry.host}/{repo}", "token_sha256": ""}
    ]


async def test_inspect_names_the_plugin_that_failed(
    token_registry: RegistryServer, private_image: tuple[str, str], tmp_path: Path
) -> None:
    image, _ = private_image
    config = node_config(tmp_path, token_registry, "--require-token")
    code, _, _, stderr = await run_cli(
        "--insecure-registry",
        token_registry.host,
        "--insecure-registry",
        realm(token_registry),
        "--image-credential-provider-config",
        str(config),
        "--image-credential-provider-bin-dir",
        str(tmp_path / "bin"),
        image,
    )
    assert code == 1
    assert stderr.count("\n") == 1
    assert f"credential provider {NAME}: exited with status 1" in stderr
    assert "no ServiceAccount token" not in stderr  # the plugin's stderr stays its own


async def test_inspect_refuses_a_bad_config_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\n")
    code, _, _, stderr = await run_cli(
        "--image-credential-provider-config",
        str(config),
        "--image-credential-provider-bin-dir",
        str(tmp_path),
        "127.0.0.1:1/x:1",
    )
    assert code == 1
    assert stderr == f"archwarden: error: {config}.providers: expected a list\n"


class Accounts:
    def __init__(self) -> None:
        self.asked: list[tuple[str, str, str]] = []

    async def account(self, namespace: str, name: str) -> registry.ServiceAccount:
        return registry.ServiceAccount(namespace, name, f"uid-{name}", {"lab.io/role": "puller"})

    async def token(self, namespace: str, name: str, audience: str) -> str:
        self.asked.append((namespace, name, audience))
        return f"{namespace}.{name}.{audience}"


def reviewer(
    server: RegistryServer, providers: registry.CredentialProviders | None
) -> admission.Admission:
    config = settings.Settings(mode="enforce")
    client = registry.RegistryClient(helpers.settings_for(server))
    return admission.Admission(
        config,
        registry.Resolver(client),
        lambda: policy.nodes_from_platforms(["linux/arm64"]),
        image_credentials=providers.for_image if providers is not None else None,
    )


def pod(image: str, account: str = "builder") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "team"},
        "spec": {"serviceAccountName": account, "containers": [{"name": "c", "image": image}]},
    }


async def test_admission_judges_it_with_a_token_mode_provider(
    token_registry: RegistryServer, private_image: tuple[str, str], tmp_path: Path
) -> None:
    image, repo = private_image
    config = node_config(
        tmp_path,
        token_registry,
        "--require-token",
        tokenAttributes={
            "serviceAccountTokenAudience": "lab-registry",
            "cacheType": "ServiceAccount",
            "requireServiceAccount": True,
            "requiredServiceAccountAnnotationKeys": ["lab.io/role"],
        },
    )
    # Without the node's credentials the image cannot be read: admitted unchecked (open).
    unchecked = await reviewer(token_registry, None).review(pod(image), operation="CREATE")
    assert unchecked.allowed and unchecked.warnings
    assert f"registry {token_registry.host}" in unchecked.warnings[0]

    accounts = Accounts()
    providers = registry.CredentialProviders.from_files(
        str(config), str(tmp_path / "bin"), accounts=accounts
    )
    engine = reviewer(token_registry, providers)
    outcome = await engine.review(pod(image), operation="CREATE")
    assert outcome.allowed and outcome.label == "allowed", outcome
    assert outcome.warnings == ()
    (run,) = plugin_log(tmp_path)
    assert run["image"] == f"{token_registry.host}/{repo}"
    assert run["annotations"] == {"lab.io/role": "puller"}
    assert run["token_sha256"]  # the token reached the plugin
    assert accounts.asked == [("team", "builder", "lab-registry")]

    # Another image of the same ServiceAccount on the same registry: the plugin's answer is
    # cached per registry and ServiceAccount, as in the kubelet.
    other = image.replace(":1", "@" + "sha256:" + "0" * 64)
    await asyncio.gather(engine.review(pod(other), operation="CREATE"))
    assert len(plugin_log(tmp_path)) == 1
