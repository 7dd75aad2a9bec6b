"""PullSecrets merges the global secret, the ServiceAccount's and the pod's (fake API reader:
the real one is exercised by the e2e suite against the local cluster)."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import time
import tracemalloc
from collections.abc import Mapping
from typing import Any

import pytest

from archwarden import kube
from archwarden.kube import _api
from archwarden.kube import _secrets as kube_secrets


def dockerconfig(host: str, user: str, password: str) -> dict[str, Any]:
    raw = json.dumps({"auths": {host: {"username": user, "password": password}}}).encode()
    return {"data": {".dockerconfigjson": base64.b64encode(raw).decode()}}


class FakeReader:
    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], Mapping[str, Any]] = {}
        self.accounts: dict[tuple[str, str], Mapping[str, Any]] = {}
        self.calls = 0

    async def secret(self, namespace: str, name: str) -> Mapping[str, Any]:
        self.calls += 1
        if (namespace, name) not in self.secrets:
            raise _api.NotFound(name)
        return self.secrets[(namespace, name)]

    async def service_account(self, namespace: str, name: str) -> Mapping[str, Any]:
        self.calls += 1
        if (namespace, name) not in self.accounts:
            raise _api.NotFound(name)
        return self.accounts[(namespace, name)]


async def test_pod_secret_wins_over_account_and_global_and_missing_ones_are_named() -> None:
    reader = FakeReader()
    reader.secrets[("infra", "global")] = dockerconfig("r.example", "global", "g-pass")
    reader.secrets[("team", "sa-cred")] = dockerconfig("r.example", "sa", "s-pass")
    reader.secrets[("team", "pod-cred")] = dockerconfig("r.example", "pod", "p-pass")
    reader.secrets[("team", "other")] = dockerconfig("other.example", "o", "o-pass")
    reader.accounts[("team", "builder")] = {"imagePullSecrets": [{"name": "sa-cred"}]}
    secrets = kube.PullSecrets(reader, "infra/global")  # type: ignore[arg-type]

    store, problems = await secrets.for_pod("team", ["pod-cred", "other", "absent"], "builder")
    assert store.lookup("r.example").username == "pod"  # type: ignore[union-attr]
    assert store.lookup("other.example").username == "o"  # type: ignore[union-attr]
    assert problems == ["pull secret team/absent not found"]

    store, _ = await secrets.for_pod("team", [], "builder")
    assert store.lookup("r.example").username == "sa"  # type: ignore[union-attr]
    store, _ = await secrets.for_pod("team", [], "default")  # no such account: global only
    assert store.lookup("r.example").username == "global"  # type: ignore[union-attr]


async def test_broken_secrets_are_reported_without_their_content_and_cached() -> None:
    reader = FakeReader()
    reader.secrets[("team", "garbled")] = {"data": {".dockerconfigjson": "!!!not-base64!!!"}}
    reader.secrets[("team", "opaque")] = {"data": {"password": "c2VjcmV0"}}
    secrets = kube.PullSecrets(reader)  # type: ignore[arg-type]
    store, problems = await secrets.for_pod("team", ["garbled", "opaque"], "default")
    assert len(store) == 0
    assert problems == [
        "pull secret team/garbled: .dockerconfigjson is not base64",
        "pull secret team/opaque has no .dockerconfigjson",
    ]
    assert all("secret\n" not in p and "c2VjcmV0" not in p for p in problems)
    calls = reader.calls
    _, again = await secrets.for_pod("team", ["garbled", "opaque"], "default")
    assert reader.calls == calls  # secrets and the account answer come from the TTL cache
    assert again == problems  # and every review is told, not only the first


class SlowReader(FakeReader):
    """Every read takes ``delay``; counts reads in flight."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.in_flight = 0
        self.most_in_flight = 0
        self.names: list[str] = []

    async def secret(self, namespace: str, name: str) -> Mapping[str, Any]:
        self.names.append(name)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            return await super().secret(namespace, name)
        finally:
            self.in_flight -= 1


async def test_thousands_of_missing_secrets_are_capped_read_concurrently_and_de_duplicated() -> (
    None
):
    reader = SlowReader(delay=0.05)
    secrets = kube.PullSecrets(reader, max_secrets=16, concurrency=4)  # type: ignore[arg-type]
    names = [f"absent-{i}" for i in range(4000)]
    started = time.perf_counter()
    _store, problems = await secrets.for_pod("team", ["absent-0", *names], "default")
    assert time.perf_counter() - started < 1.0  # 16 reads, four at a time: about 0.2 s
    assert reader.names == [f"absent-{i}" for i in range(16)]
    assert reader.most_in_flight == 4
    assert problems[0] == "only the first 16 of 4000 pull secrets were read"
    assert problems[1:] == [f"pull secret team/absent-{i} not found" for i in range(16)]


async def test_missing_secrets_are_remembered_briefly() -> None:
    now = [0.0]
    reader = FakeReader()
    secrets = kube.PullSecrets(reader, clock=lambda: now[0])  # type: ignore[arg-type]
    _, problems = await secrets.for_pod("team", ["late"], "default")
    assert problems == ["pull secret team/late not found"]
    calls = reader.calls
    _, again = await secrets.for_pod("team", ["late"], "default")
    assert again == problems and reader.calls == calls  # the negative cache answered
    reader.secrets[("team", "late")] = dockerconfig("r.example", "late", "l-pass")
    now[0] += kube_secrets.MISSING_TTL + 0.1
    store, problems = await secrets.for_pod("team", ["late"], "default")
    assert problems == [] and store.lookup("r.example").username == "late"  # type: ignore[union-attr]
    assert kube_secrets.MISSING_TTL < kube_secrets.SECRET_TTL


async def test_held_answers_from_the_caches_exactly_as_for_pod_and_none_before() -> None:
    reader = FakeReader()
    reader.secrets[("infra", "global")] = dockerconfig("r.example", "global", "g-pass")
    reader.secrets[("team", "sa-cred")] = dockerconfig("r.example", "sa", "s-pass")
    reader.accounts[("team", "builder")] = {"imagePullSecrets": [{"name": "sa-cred"}]}
    secrets = kube.PullSecrets(reader, "infra/global", max_secrets=2)  # type: ignore[arg-type]
    asked = ("team", ["absent", "sa-cred", "third"], "builder")
    assert secrets.held(*asked) is None  # nothing read yet: the caller must await for_pod
    read, read_problems = await secrets.for_pod(*asked)
    calls = reader.calls
    held = secrets.held(*asked)
    assert held is not None and reader.calls == calls
    store, problems = held
    assert (
        problems
        == read_problems
        == [
            "only the first 2 of 3 pull secrets were read",
            "pull secret team/absent not found",
        ]
    )
    assert store.lookup("r.example").username == read.lookup("r.example").username == "sa"  # type: ignore[union-attr]
    # Another account, not read yet: not held, whatever else is cached.
    assert secrets.held("team", [], "default") is None
    assert secrets.held("team", ["absent"], "builder") is not None  # both known
    assert secrets.held("team", ["sa-cred", "new"], "builder") is None


class GatedReader(FakeReader):
    """Reads wait for ``gate``: as many reviews as arrive meanwhile find the cache empty."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.reads: list[tuple[str, str, str]] = []

    async def secret(self, namespace: str, name: str) -> Mapping[str, Any]:
        self.reads.append(("secret", namespace, name))
        await self.gate.wait()
        return await super().secret(namespace, name)

    async def service_account(self, namespace: str, name: str) -> Mapping[str, Any]:
        self.reads.append(("serviceaccount", namespace, name))
        await self.gate.wait()
        return await super().service_account(namespace, name)


async def test_concurrent_reviews_share_one_read_of_each_account_and_secret() -> None:
    # A Deployment scaled to 50 replicas sends 50 pod reviews at once; when the cache is cold
    # (or just expired) they must not read the same ServiceAccount and Secret 50 times each.
    reader = GatedReader()
    reader.accounts[("team", "builder")] = {"imagePullSecrets": [{"name": "sa-cred"}]}
    reader.secrets[("team", "sa-cred")] = dockerconfig("r.example", "sa", "s-pass")
    secrets = kube.PullSecrets(reader)  # type: ignore[arg-type]
    reviews = [
        asyncio.ensure_future(secrets.for_pod("team", ["absent"], "builder")) for _ in range(50)
    ]
    await asyncio.sleep(0.01)
    reader.gate.set()
    for store, problems in await asyncio.gather(*reviews):
        assert store.lookup("r.example").username == "sa"  # type: ignore[union-attr]
        assert problems == ["pull secret team/absent not found"]
    assert sorted(reader.reads) == [
        ("secret", "team", "absent"),
        ("secret", "team", "sa-cred"),
        ("serviceaccount", "team", "builder"),
    ]


async def test_a_shared_read_outlives_a_review_that_gave_up_waiting() -> None:
    reader = GatedReader()
    reader.accounts[("team", "builder")] = {}
    secrets = kube.PullSecrets(reader)  # type: ignore[arg-type]
    first = asyncio.ensure_future(secrets.for_pod("team", [], "builder"))
    second = asyncio.ensure_future(secrets.for_pod("team", [], "builder"))
    await asyncio.sleep(0.01)
    first.cancel()  # its review ran out of budget
    await asyncio.sleep(0)
    reader.gate.set()
    assert (await second)[1] == []
    assert first.cancelled()
    assert reader.reads == [("serviceaccount", "team", "builder")]


def dockerconfig_of(config: Mapping[str, Any]) -> dict[str, Any]:
    raw = json.dumps(config).encode()
    return {"data": {".dockerconfigjson": base64.b64encode(raw).decode()}}


def many_hosts(decoded_bytes: int) -> dict[str, Any]:
    """A config of about ``decoded_bytes`` whose parse would keep several times that."""
    entry = len(json.dumps({"r00000.example": {"username": "u00000"}})) + 1
    count = decoded_bytes // entry
    return {"auths": {f"r{i:05d}.example": {"username": f"u{i:05d}"} for i in range(count)}}


async def test_a_secret_past_pull_secret_bytes_is_never_decoded_and_is_remembered() -> None:
    reader = FakeReader()
    reader.secrets[("team", "huge")] = dockerconfig_of(many_hosts(1 << 20))
    reader.secrets[("team", "small")] = dockerconfig("r.example", "small", "s-pass")
    secrets = kube.PullSecrets(reader)  # type: ignore[arg-type]
    gc.collect()
    tracemalloc.start()
    try:
        store, problems = await secrets.for_pod("team", ["huge", "small"], "default")
        _kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Decoding alone would take 1 MiB, parsing 16 times that.
    assert peak < 128 * 1024
    assert problems == [
        "pull secret team/huge not used: its .dockerconfigjson is larger than "
        "limits.pullSecretBytes (262144 bytes)"
    ]
    assert store.hosts == ["r.example"]
    calls = reader.calls
    again = secrets.held("team", ["huge", "small"], "default")
    assert again is not None and again[1] == problems and reader.calls == calls


@pytest.mark.parametrize(
    ("decoded", "refused"), [(4094, False), (4095, False), (4096, False), (4097, True)]
)
async def test_pull_secret_bytes_bounds_the_decoded_length_whatever_the_padding(
    decoded: int, refused: bool
) -> None:
    short = json.dumps({"auths": {"r.example": {"username": "u", "password": ""}}})
    password = "p" * (decoded - len(short))
    reader = FakeReader()
    reader.secrets[("team", "edge")] = dockerconfig("r.example", "u", password)
    secrets = kube.PullSecrets(reader, pull_secret_bytes=4096)  # type: ignore[arg-type]
    store, problems = await secrets.for_pod("team", ["edge"], "default")
    assert (store.hosts == [], bool(problems)) == (refused, refused)


async def test_parsed_secrets_stay_within_the_cache_bytes_and_the_oldest_go_first() -> None:
    reader = FakeReader()
    names = [f"s{i:02d}" for i in range(40)]
    for name in names:  # 40 secrets of 64 KiB: 2.5 MiB to keep in a 1 MiB cache
        reader.secrets[("team", name)] = dockerconfig("r.example", name, "p" * 65_536)
    secrets = kube.PullSecrets(reader, pull_secret_cache_bytes=1 << 20)  # type: ignore[arg-type]

    async def fill() -> None:
        for name in names:
            store, problems = await secrets.for_pod("team", [name], "default")
            assert store.lookup("r.example").username == name  # type: ignore[union-attr]
            assert problems == []

    gc.collect()
    tracemalloc.start()
    try:
        await fill()
        gc.collect()
        kept, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept <= 1 << 20
    last = secrets.held("team", [names[-1]], "default")  # the newest: warm, nothing read
    assert last is not None and last[0].lookup("r.example").username == names[-1]  # type: ignore[union-attr]
    assert secrets.held("team", [names[0]], "default") is None  # the oldest: evicted
    calls = reader.calls
    store, _ = await secrets.for_pod("team", [names[0]], "default")
    assert reader.calls == calls + 1
    assert store.lookup("r.example").username == names[0]  # type: ignore[union-attr]


async def test_a_secret_larger_than_the_whole_cache_serves_its_review_uncached() -> None:
    reader = FakeReader()
    reader.secrets[("team", "big")] = dockerconfig("r.example", "big", "p" * 100_000)
    secrets = kube.PullSecrets(reader, pull_secret_cache_bytes=64 * 1024)  # type: ignore[arg-type]
    for _ in range(2):
        store, problems = await secrets.for_pod("team", ["big"], "default")
        assert store.lookup("r.example").username == "big"  # type: ignore[union-attr]
        assert problems == []
    assert reader.calls == 1 + 2  # the account once, the secret at each review


class BigAccountReader(FakeReader):
    """A ServiceAccount listing 9,000 names of 253 characters and 1,000 longer ones, new
    strings at every read as from the API server."""

    async def service_account(self, namespace: str, name: str) -> Mapping[str, Any]:
        self.calls += 1
        names = [f"{i:05d}-".ljust(253, "x") for i in range(9000)]
        names += [f"{i:05d}-".ljust(300, "y") for i in range(1000)]
        return {"imagePullSecrets": [{"name": n} for n in names]}


async def test_a_service_account_with_10000_pull_secrets_keeps_only_what_is_read() -> None:
    reader = BigAccountReader()
    secrets = kube.PullSecrets(reader)  # type: ignore[arg-type]
    gc.collect()
    tracemalloc.start()
    try:
        _store, problems = await secrets.for_pod("team", ["own"], "builder")
        del _store
        gc.collect()
        kept, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept < 64 * 1024  # the names alone are 2.8 MiB
    assert reader.calls == 1 + 16
    assert problems[:2] == [
        "1000 pull secret names were skipped: longer than 253 characters, no Secret has one",
        "only the first 16 of 9001 pull secrets were read",
    ]
    assert len(problems) == 2 + 16  # each read one not found
    held = secrets.held("team", ["own"], "builder")
    assert held is not None and held[1] == problems and reader.calls == 1 + 16


async def test_concurrent_reviews_share_one_parse_of_a_secret() -> None:
    reader = GatedReader()
    reader.secrets[("team", "cred")] = dockerconfig_of(many_hosts(64 * 1024))
    secrets = kube.PullSecrets(reader)  # type: ignore[arg-type]
    reviews = [
        asyncio.ensure_future(secrets.for_pod("team", ["cred"], "default")) for _ in range(20)
    ]
    await asyncio.sleep(0.01)
    reader.gate.set()
    stores = [store for store, _ in await asyncio.gather(*reviews)]
    assert len(stores[0]) > 1000
    assert all(store is stores[0] for store in stores)  # not 20 parses kept meanwhile


async def test_a_pod_naming_a_secret_longer_than_any_is_told_without_a_read() -> None:
    reader = FakeReader()
    reader.secrets[("team", "cred")] = dockerconfig("r.example", "u", "p")
    secrets = kube.PullSecrets(reader)  # type: ignore[arg-type]
    store, problems = await secrets.for_pod("team", ["x" * 254, "cred", "y" * 253], "default")
    assert problems == [
        "1 pull secret name was skipped: longer than 253 characters, no Secret has one",
        f"pull secret team/{'y' * 253} not found",  # as long as a name can be: read
    ]
    assert store.hosts == ["r.example"]
    assert reader.calls == 1 + 2  # the account, "cred" and the 253 characters long one
