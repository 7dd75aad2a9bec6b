"""credentialProviders: the kubelet's CredentialProviderConfig and plugins, mounted into
archwarden's pods (inline or from the node, binaries from the node or an image), and
serviceaccounts/token create granted only for token providers."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.chart.helm import HelmError, find_helm, render
from tests.chart.test_chart import one

pytestmark = pytest.mark.skipif(
    find_helm() is None, reason="helm not found (make cluster-build builds it)"
)

ECR = {
    "apiVersion": "kubelet.config.k8s.io/v1",
    "kind": "CredentialProviderConfig",
    "providers": [
        {
            "name": "ecr-credential-provider",
            "matchImages": ["*.dkr.ecr.*.amazonaws.com"],
            "defaultCacheDuration": "12h",
            "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
        }
    ],
}
TOKEN_PROVIDER = {
    "name": "token-provider",
    "matchImages": ["registry.example"],
    "defaultCacheDuration": "1m",
    "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
    "tokenAttributes": {
        "serviceAccountTokenAudience": "registry.example",
        "requireServiceAccount": True,
    },
}
BIN = "/var/lib/archwarden/credential-providers/bin"


def settings(objects: list[dict[str, Any]]) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(one(objects, "ConfigMap")["data"]["config.yaml"])
    return loaded


def token_rules(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    role = next(
        o
        for o in objects
        if o["kind"] == "ClusterRole" and not o["metadata"]["name"].endswith("-api")
    )
    return [r for r in role["rules"] if "serviceaccounts/token" in r["resources"]]


def test_off_by_default_nothing_mounted_nothing_granted() -> None:
    objects = render()
    assert "credentialProviders" not in settings(objects)
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert "initContainers" not in spec
    assert {v["name"] for v in spec["volumes"]} == {"config", "tmp"}
    assert token_rules(objects) == []


def test_an_inline_config_and_the_nodes_plugin_directory() -> None:
    objects = render(
        {
            "credentialProviders.enabled": True,
            "credentialProviders.config": ECR,
            "credentialProviders.hostBinDir": "/etc/eks/image-credential-provider",
        }
    )
    configmap = one(objects, "ConfigMap")
    assert yaml.safe_load(configmap["data"]["credential-providers.yaml"]) == ECR
    assert settings(objects)["credentialProviders"] == {
        "enabled": True,
        "config": "/etc/archwarden/credential-providers",
        "binDir": BIN,
        "timeoutSeconds": 5,
        "maxConcurrentRuns": 4,
        "outputBytes": 262144,
        "cacheBytes": 4194304,
        "tokenCacheBytes": 4194304,
    }
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["credential-providers"]["hostPath"] == {
        "path": "/etc/eks/image-credential-provider",
        "type": "Directory",
    }
    items = volumes["config"]["projected"]["sources"][0]["configMap"]["items"]
    assert {"key": "credential-providers.yaml", "path": "credential-providers/config.yaml"} in items
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["credential-providers"] == {
        "name": "credential-providers",
        "mountPath": BIN,
        "readOnly": True,
    }
    assert token_rules(objects) == []


def test_the_nodes_config_and_plugins_from_an_image() -> None:
    objects = render(
        {
            "credentialProviders.enabled": True,
            "credentialProviders.hostConfig": "/etc/kubernetes/credential-provider-config.yaml",
            "credentialProviders.image.repository": "registry.example/plugins/acr",
            "credentialProviders.image.tag": "v1.33.0",
        }
    )
    assert settings(objects)["credentialProviders"]["config"] == (
        "/var/lib/archwarden/node-credential-providers"
    )
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    assert init["image"] == "registry.example/plugins/acr:v1.33.0"
    assert init["command"] == ["cp", "-a", "/plugins/.", "/credential-providers/"]
    # As locked down as archwarden's own container.
    assert init["securityContext"] == spec["containers"][0]["securityContext"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["credential-providers"] == {
        "name": "credential-providers",
        "emptyDir": {"sizeLimit": "256Mi"},
    }
    assert volumes["node-credential-providers"]["hostPath"] == {
        "path": "/etc/kubernetes/credential-provider-config.yaml"
    }


def test_token_providers_are_granted_serviceaccounts_token_create_only() -> None:
    config = {**ECR, "providers": [TOKEN_PROVIDER]}
    base = {
        "credentialProviders.enabled": True,
        "credentialProviders.config": config,
        "credentialProviders.hostBinDir": "/opt/plugins",
    }
    with pytest.raises(HelmError) as caught:
        render(base)
    assert (
        "credentialProviders: provider token-provider has tokenAttributes: set "
        "credentialProviders.serviceAccountTokens"
    ) in caught.value.stderr
    objects = render({**base, "credentialProviders.serviceAccountTokens": True})
    assert token_rules(objects) == [
        {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]}
    ]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "credentialProviders.enabled needs config"),
        (
            {"credentialProviders.config": ECR},
            "credentialProviders.enabled needs the plugin binaries",
        ),
        (
            {
                "credentialProviders.config": ECR,
                "credentialProviders.hostConfig": "/x",
                "credentialProviders.hostBinDir": "/b",
            },
            "set config or hostConfig, not both",
        ),
        (
            {
                "credentialProviders.config": ECR,
                "credentialProviders.hostBinDir": "/b",
                "credentialProviders.image.repository": "r/p",
                "credentialProviders.image.tag": "v1",
            },
            "set hostBinDir or image.repository, not both",
        ),
        (
            {"credentialProviders.config": ECR, "credentialProviders.image.repository": "r/p"},
            "credentialProviders.image.tag is required",
        ),
        (
            {
                "credentialProviders.config": ECR,
                "credentialProviders.hostBinDir": "/b",
                "credentialProviders.outputBytes": 10,
            },
            "outputBytes",
        ),
    ],
)
def test_what_cannot_work_fails_the_render(values: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmError) as caught:
        render({"credentialProviders.enabled": True, **values})
    assert message in caught.value.stderr
