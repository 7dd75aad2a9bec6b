"""Kubernetes' own test credential provider (``k8s.io/kubernetes/test/e2e_node/plugins/
gcp-credential-provider``, built by ``hack/cluster/build.sh`` from the kube pin): a plugin
written by others, run through archwarden's exec protocol.

Its token endpoint is a constant (the GCE metadata server), but its HTTP client honours
``HTTP_PROXY``, which the config's ``env`` sets to a local server answering the metadata token
request: nothing leaves 127.0.0.1. In token mode (``PLUGIN_MODE=serviceaccount``) it checks, with
its own code, that the request carries a JWS token for audience ``test-audience`` and exactly the
annotations its e2e test expects: an independent check of the request archwarden writes.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from archwarden import reference, registry

CACHE = Path(os.environ.get("ARCHWARDEN_CACHE", Path.home() / ".cache/archwarden"))
KUBE_VERSION = next(
    line.split()[1]
    for line in (Path(__file__).parents[2] / "hack/cluster/kube/go.mod").read_text().splitlines()
    if line.split()[:1] == ["k8s.io/kubernetes"]
)
BIN_DIR = CACHE / f"bin/gcp-credential-provider-{KUBE_VERSION}"
NAME = "gcp-credential-provider"
ACCESS_TOKEN = "ya29.local-access-token"


@pytest.fixture(scope="module", autouse=True)
def plugin() -> None:
    """``make test`` builds it first (tools-build); a run on its own builds it here, from the
    Go module cache the cluster's build filled."""
    if (BIN_DIR / NAME).exists():
        return
    subprocess.run(
        [str(Path(__file__).parents[2] / "hack/cluster/build.sh")],
        env={**os.environ, "ARCHWARDEN_BUILD_ONLY": "gcpcredprovider"},
        stdout=subprocess.DEVNULL,
        timeout=1800,
        check=True,
    )


@pytest.fixture
def metadata() -> Iterator[tuple[str, list[str]]]:
    """A local stand-in for the metadata server, reached as the plugin's HTTP proxy."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(f"{self.path} {self.headers.get('Metadata-Flavor')}")
            body = json.dumps({"access_token": ACCESS_TOKEN, "expires_in": 3600}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def gcp_providers(proxy: str, accounts: Any = None, **fields: Any) -> registry.CredentialProviders:
    provider = {
        "name": NAME,
        "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
        "matchImages": ["*.pkg.dev", "gcr.io", "*.gcr.io"],
        "defaultCacheDuration": "1m",
        "env": [{"name": "HTTP_PROXY", "value": proxy}, {"name": "NO_PROXY", "value": ""}],
        **fields,
    }
    if "extraEnv" in provider:
        provider["env"] = [*provider["env"], *provider.pop("extraEnv")]
    loaded = registry.parse_provider_config(
        json.dumps(
            {
                "apiVersion": "kubelet.config.k8s.io/v1",
                "kind": "CredentialProviderConfig",
                "providers": [provider],
            }
        )
    )
    return registry.CredentialProviders(loaded, str(BIN_DIR), accounts=accounts)


async def test_its_answer_gives_the_image_a_credential(
    metadata: tuple[str, list[str]],
) -> None:
    proxy, seen = metadata
    providers = gcp_providers(proxy)
    ref = reference.parse("europe-docker.pkg.dev/project/repo/app:1")
    provided = await providers.for_image(ref)
    assert provided.failures == ()
    credential = provided.store.lookup("europe-docker.pkg.dev")
    assert credential is not None
    assert (credential.username, credential.password) == ("_token", ACCESS_TOKEN)
    assert seen == [
        "http://metadata.google.internal./computeMetadata/v1/instance/service-accounts/default/"
        "token Google"
    ]
    # cacheKeyType Registry: another repository of the registry is served from the cache.
    await providers.for_image(reference.parse("europe-docker.pkg.dev/project/repo/other:2"))
    assert providers.runs == 1
    await providers.for_image(reference.parse("us-docker.pkg.dev/project/repo/other:2"))
    assert providers.runs == 2


def jws(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


class Accounts:
    def __init__(self, annotations: dict[str, str]) -> None:
        self.annotations = annotations

    async def account(self, namespace: str, name: str) -> registry.ServiceAccount:
        return registry.ServiceAccount(namespace, name, "uid-1", self.annotations)

    async def token(self, namespace: str, name: str, audience: str) -> str:
        return jws(
            {
                "aud": [audience],
                "iss": "https://kubernetes.default.svc",
                "sub": f"system:serviceaccount:{namespace}:{name}",
                "exp": 4102444800,
                "kubernetes.io": {
                    "namespace": namespace,
                    "serviceaccount": {"name": name, "uid": "uid-1"},
                },
            }
        )


TOKEN_ATTRIBUTES = {
    "serviceAccountTokenAudience": "test-audience",
    "cacheType": "ServiceAccount",
    "requireServiceAccount": True,
    "requiredServiceAccountAnnotationKeys": ["domain.io/identity-id"],
    "optionalServiceAccountAnnotationKeys": ["domain.io/identity-type"],
}
EXPECTED = {"domain.io/identity-id": "123456", "domain.io/identity-type": "serviceaccount"}


async def test_token_mode_passes_its_own_checks(metadata: tuple[str, list[str]]) -> None:
    proxy, _ = metadata
    providers = gcp_providers(
        proxy,
        Accounts({**EXPECTED, "unrelated": "x"}),
        tokenAttributes=TOKEN_ATTRIBUTES,
        extraEnv=[{"name": "PLUGIN_MODE", "value": "serviceaccount"}],
    )
    ref = reference.parse("gcr.io/project/app:1")
    provided = await providers.for_image(ref, "team", "builder")
    assert provided.failures == ()
    credential = provided.store.lookup("gcr.io")
    assert credential is not None and credential.password == ACCESS_TOKEN


async def test_token_mode_refused_by_it_with_another_audience(
    metadata: tuple[str, list[str]],
) -> None:
    proxy, _ = metadata
    providers = gcp_providers(
        proxy,
        Accounts(EXPECTED),
        tokenAttributes={**TOKEN_ATTRIBUTES, "serviceAccountTokenAudience": "elsewhere"},
        extraEnv=[{"name": "PLUGIN_MODE", "value": "serviceaccount"}],
    )
    provided = await providers.for_image(reference.parse("gcr.io/p/app:1"), "team", "builder")
    (failure,) = provided.failures
    assert str(failure) == (
        f"registry gcr.io: credential provider {NAME}: exited with status 255: p/app"
    )
