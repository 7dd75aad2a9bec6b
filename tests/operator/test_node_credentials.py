"""Node credentials (kubelet credential providers) composed with a pod's pull secrets, and the
ServiceAccount tokens token-mode providers are given."""

from __future__ import annotations

from typing import Any

from archwarden import admission, kube, reference, registry

REF = reference.parse("registry.example/team/app:1")
SECRET = registry.Credential("pull-secret", "a")
NODE = registry.Credential("node", "b")


def store(credential: registry.Credential | None) -> registry.CredentialStore:
    return registry.CredentialStore({"registry.example": credential} if credential else {})


def tried(pod: registry.Credential | None, node: registry.Credential | None) -> list[Any]:
    provided = registry.Provided(store(node))
    attempts = admission._attempts(store(pod), provided, REF)
    return [s.lookup("registry.example") if s is not None else None for s in attempts]


def test_pull_secrets_first_then_the_node_as_the_kubelet() -> None:
    assert tried(SECRET, NODE) == [SECRET, NODE]
    assert tried(None, NODE) == [NODE]
    assert tried(SECRET, None) == [SECRET]
    assert tried(SECRET, SECRET) == [SECRET]  # the same credential is not tried twice


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


class Reader:
    async def service_account(self, namespace: str, name: str) -> dict[str, Any]:
        return {"metadata": {"uid": "u1", "annotations": {"keep.io/a": "1", "drop.io/b": "2"}}}


async def test_tokens_are_kept_per_account_and_audience_until_80_percent_of_their_life() -> None:
    asked: list[tuple[str, str, str]] = []

    async def request(namespace: str, name: str, audience: str) -> tuple[str, float]:
        asked.append((namespace, name, audience))
        return f"t{len(asked)}", 3600.0

    clock = Clock()
    tokens = kube.ServiceAccountTokens(Reader(), request, ["keep.io/a"], clock=clock)  # type: ignore[arg-type]
    assert await tokens.token("team", "builder", "aud") == "t1"
    assert await tokens.token("team", "builder", "aud") == "t1"
    assert await tokens.token("team", "builder", "other") == "t2"
    assert await tokens.token("team", "deployer", "aud") == "t3"
    clock.now += 0.8 * 3600 - 1
    assert await tokens.token("team", "builder", "aud") == "t1"
    clock.now += 2
    assert await tokens.token("team", "builder", "aud") == "t4"
    account = await tokens.account("team", "builder")
    assert (account.uid, dict(account.annotations)) == ("u1", {"keep.io/a": "1"})


async def test_the_token_cache_is_bounded_in_bytes() -> None:
    async def request(namespace: str, name: str, audience: str) -> tuple[str, float]:
        return "x" * 1000, 3600.0

    tokens = kube.ServiceAccountTokens(Reader(), request, cache_bytes=8192)  # type: ignore[arg-type]
    for i in range(100):
        await tokens.token("team", f"sa{i}", "aud")
    assert tokens.requests == 100
    await tokens.token("team", "sa0", "aud")  # long gone
    assert tokens.requests == 101
    await tokens.token("team", "sa99", "aud")  # still kept
    assert tokens.requests == 101
