"""Kubelet credential provider plugins: config, matching, exec protocol, bounds and caching.

The plugins here are small scripts written for each case; the real plugins (the project's own
test plugin and Kubernetes' gcp-credential-provider) are exercised in
``test_credential_provider_plugins.py`` and against a registry in tests/registry.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from archwarden import reference, registry
from archwarden.registry import _provider_config as config

API = "credentialprovider.kubelet.k8s.io/v1"
SECRET = "s3cr3t-password-value"

# keyring_test.go TestURLsMatch (Kubernetes 1.37), plus the path-prefix and glob-class cases.
MATCHES = [
    ("*.kubernetes.io", "prefix.kubernetes.io", True),
    ("prefix.*.io", "prefix.kubernetes.io", True),
    ("prefix.kubernetes.*", "prefix.kubernetes.io", True),
    ("*-good.kubernetes.io", "prefix-good.kubernetes.io", True),
    ("*.kubernetes.io/blah", "prefix.kubernetes.io/blah", True),
    ("prefix.*.io/foo", "prefix.kubernetes.io/foo/bar", True),
    ("*.kubernetes.io:1111/blah", "prefix.kubernetes.io:1111/blah", True),
    ("prefix.*.io:1111/foo", "prefix.kubernetes.io:1111/foo/bar", True),
    ("*.kubernetes.io", "kubernetes.io", False),
    ("*.*.kubernetes.io", "prefix.kubernetes.io", False),
    ("*.*.kubernetes.io", "kubernetes.io", False),
    ("*kubernetes.io", "a.kubernetes.io", False),
    ("*kubernetes.io", "kubernetes.io", True),
    ("*.*.*.kubernetes.io", "a.b.c.kubernetes.io", True),
    ("kubernetes.io", "kubernetes.com", False),
    ("k*.io", "quay.io", False),
    ("*.kubernetes.io:1234/blah", "prefix.kubernetes.io:1111/blah", False),
    ("prefix.*.io/foo", "prefix.kubernetes.io:1111/foo/bar", False),
    # A pattern without a port does not match an image with one, and the reverse.
    ("127.0.0.1", "127.0.0.1:5000/lab/x", False),
    ("127.0.0.1:5000", "127.0.0.1:5000/lab/x", True),
    # The path is a plain string prefix, as in the kubelet (not per path component).
    ("registry.io/team", "registry.io/teams/x", True),
    ("registry.io/team/", "registry.io/teams/x", False),
    ("*.dkr.ecr.*.amazonaws.com", "123456789012.dkr.ecr.us-east-1.amazonaws.com/app", True),
    ("*.azurecr.io", "myregistry.azurecr.io/app", True),
    ("*.pkg.dev", "europe-docker.pkg.dev/p/r/app", True),
    ("[a-c]*.io", "b.io/x", True),
    ("[^a-c]*.io", "b.io/x", False),
    ("[bad.io", "b.io/x", False),  # a malformed glob matches nothing
]


@pytest.mark.parametrize(("pattern", "image", "expected"), MATCHES)
def test_match_images_as_the_kubelet(pattern: str, image: str, expected: bool) -> None:
    assert config.matches(pattern, image) is expected


@pytest.mark.parametrize(
    ("key", "indexed"),
    [
        ("https://index.docker.io/v1/", "index.docker.io"),
        ("http://registry.io/v2/team", "registry.io/team"),
        ("registry.io/", "registry.io"),
        ("*.pkg.dev", "*.pkg.dev"),
    ],
)
def test_auth_keys_indexed_as_the_kubelet_keyring(key: str, indexed: str) -> None:
    assert config.auth_key(key) == indexed


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("90s", 90.0), ("1h30m", 5400.0), ("1.5h", 5400.0), ("500ms", 0.5)],
)
def test_durations_as_go_writes_them(text: str, seconds: float) -> None:
    assert config.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "1d", "h", "1h 2m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        config.parse_duration(text)


def provider_yaml(**fields: Any) -> str:
    entry: dict[str, Any] = {
        "name": "plugin",
        "matchImages": ["127.0.0.1:5000"],
        "defaultCacheDuration": "10m",
        "apiVersion": API,
    }
    entry.update(fields)
    entry = {k: v for k, v in entry.items() if v is not None}
    return json.dumps(
        {
            "apiVersion": "kubelet.config.k8s.io/v1",
            "kind": "CredentialProviderConfig",
            "providers": [entry],
        }
    )


TOKEN_ATTRIBUTES = {
    "serviceAccountTokenAudience": "registry.example",
    "cacheType": "ServiceAccount",
    "requireServiceAccount": True,
}


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"name": None}, r"providers\[0\]\.name: required"),
        ({"name": "a/b"}, "must be a file name"),
        ({"matchImages": []}, "matchImages: at least one pattern"),
        ({"defaultCacheDuration": None}, "defaultCacheDuration: required"),
        ({"defaultCacheDuration": "-1m"}, "must not be negative"),
        ({"defaultCacheDuration": "soon"}, "invalid duration"),
        ({"apiVersion": "v1"}, "apiVersion: must be one of"),
        ({"surprise": 1}, "unknown field 'surprise'"),
        ({"env": [{"name": "A", "vaule": "x"}]}, "unknown field 'vaule'"),
        (
            {"tokenAttributes": TOKEN_ATTRIBUTES, "apiVersion": f"{API}beta1"},
            "only supported with apiVersion",
        ),
        (
            {"tokenAttributes": {**TOKEN_ATTRIBUTES, "cacheType": None}},
            "cacheType: must be one of ServiceAccount, Token",
        ),
        (
            {"tokenAttributes": {**TOKEN_ATTRIBUTES, "requireServiceAccount": None}},
            "requireServiceAccount: required",
        ),
        (
            {
                "tokenAttributes": {
                    **TOKEN_ATTRIBUTES,
                    "requireServiceAccount": False,
                    "requiredServiceAccountAnnotationKeys": ["a.io/b"],
                }
            },
            "needs requireServiceAccount: true",
        ),
        (
            {
                "tokenAttributes": {
                    **TOKEN_ATTRIBUTES,
                    "requiredServiceAccountAnnotationKeys": ["a.io/b"],
                    "optionalServiceAccountAnnotationKeys": ["a.io/b"],
                }
            },
            "both required and optional",
        ),
        (
            {
                "tokenAttributes": {
                    **TOKEN_ATTRIBUTES,
                    "optionalServiceAccountAnnotationKeys": ["not a key"],
                }
            },
            "not a valid annotation key",
        ),
    ],
)
def test_malformed_configs_are_one_line(fields: dict[str, Any], error: str) -> None:
    with pytest.raises(registry.InvalidProviderConfig, match=error) as caught:
        registry.parse_provider_config(provider_yaml(**fields), "cfg.yaml")
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("cfg.yaml")


def test_config_documents_themselves(tmp_path: Path) -> None:
    cases = {
        "not: [yaml": "not valid YAML or JSON",
        "[]": "expected a CredentialProviderConfig object",
        '{"kind": "KubeletConfiguration", "apiVersion": "kubelet.config.k8s.io/v1"}': "kind must",
    }
    for text, error in cases.items():
        with pytest.raises(registry.InvalidProviderConfig, match=error):
            registry.parse_provider_config(text)
    missing = tmp_path / "absent.yaml"
    with pytest.raises(registry.InvalidProviderConfig, match=r"cannot read .*absent\.yaml"):
        registry.load_provider_config(str(missing))


def test_config_directory_merged_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(provider_yaml(name="second"))
    (tmp_path / "a.json").write_text(provider_yaml(name="first"))
    (tmp_path / "notes.txt").write_text("ignored")
    loaded = registry.load_provider_config(str(tmp_path))
    assert [p.name for p in loaded.providers] == ["first", "second"]
    (tmp_path / "c.yml").write_text(provider_yaml(name="first"))
    with pytest.raises(registry.InvalidProviderConfig, match="duplicate provider name 'first'"):
        registry.load_provider_config(str(tmp_path))


# -- running plugins ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write_plugin(bin_dir: Path, name: str, body: str) -> Path:
    """A plugin script: ``request`` is the decoded request, ``answer(auth, **fields)`` prints
    a response. Every run is appended to ``<name>.runs`` next to it."""
    path = bin_dir / name
    path.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            f"""\
            import json, os, sys, time
            request = json.loads(sys.stdin.read())
            with open({str(bin_dir / (name + ".runs"))!r}, "a") as log:
                log.write(json.dumps({{"request": request, "argv": sys.argv[1:],
                                       "env": os.environ.get("PLUGIN_SETTING")}}) + "\\n")
            def answer(auth, **fields):
                body = {{"apiVersion": {API!r}, "kind": "CredentialProviderResponse",
                        "cacheKeyType": "Registry", "auth": auth}}
                body.update(fields)
                json.dump(body, sys.stdout)
            """
        )
        + textwrap.dedent(body)
    )
    path.chmod(0o755)
    return path


def runs(bin_dir: Path, name: str = "plugin") -> list[dict[str, Any]]:
    log = bin_dir / f"{name}.runs"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


OK_BODY = f"""
answer({{request["image"].split("/")[0]: {{"username": "u", "password": {SECRET!r}}}}},
       **json.loads(os.environ.get("ANSWER_FIELDS", "{{}}")))
"""


def providers_for(
    bin_dir: Path,
    *,
    clock: Clock | None = None,
    limits: registry.ProviderLimits | None = None,
    accounts: Any = None,
    **fields: Any,
) -> registry.CredentialProviders:
    loaded = registry.parse_provider_config(provider_yaml(**fields))
    return registry.CredentialProviders(
        loaded,
        str(bin_dir),
        clock=clock or Clock(),
        limits=limits,
        accounts=accounts,
    )


def ref(text: str = "127.0.0.1:5000/lab/app:1") -> reference.Reference:
    return reference.parse(text)


async def test_a_matching_image_gets_the_plugins_credential(tmp_path: Path) -> None:
    write_plugin(tmp_path, "plugin", OK_BODY)
    providers = providers_for(
        tmp_path,
        args=["--flag", "value"],
        env=[{"name": "PLUGIN_SETTING", "value": "from-config"}],
    )
    provided = await providers.for_image(ref())
    credential = provided.store.lookup("127.0.0.1:5000")
    assert credential is not None
    assert (credential.username, credential.password) == ("u", SECRET)
    assert provided.failures == ()
    (run,) = runs(tmp_path)
    # The kubelet's request: the repository without tag or digest, the configured version.
    assert run["request"] == {
        "apiVersion": API,
        "kind": "CredentialProviderRequest",
        "image": ("127.0.0.1:5000/lab/app"),
    }
    assert run["argv"] == ["--flag", "value"]
    assert run["env"] == "from-config"


async def test_an_image_no_pattern_matches_never_runs_the_plugin(tmp_path: Path) -> None:
    write_plugin(tmp_path, "plugin", OK_BODY)
    provided = await providers_for(tmp_path).for_image(ref("127.0.0.1:5001/lab/app:1"))
    assert len(provided.store) == 0
    assert runs(tmp_path) == []


async def test_auth_keys_are_matched_against_the_image(tmp_path: Path) -> None:
    write_plugin(
        tmp_path,
        "plugin",
        f"""
        answer({{"127.0.0.1:5000/other": {{"username": "wrong", "password": "x"}},
                 "127.0.0.1:5000/lab": {{"username": "lab", "password": {SECRET!r}}},
                 "127.0.0.1:5000": {{"username": "host", "password": "y"}}}})
        """,
    )
    providers = providers_for(tmp_path)
    lab = (await providers.for_image(ref())).store.lookup("127.0.0.1:5000")
    assert lab is not None and lab.username == "lab"  # the most specific key first
    elsewhere = await providers.for_image(ref("127.0.0.1:5000/team/app:1"))
    host = elsewhere.store.lookup("127.0.0.1:5000")
    assert host is not None and host.username == "host"


@pytest.mark.parametrize(
    ("key_type", "same_image", "same_registry", "other_registry"),
    [("Image", 1, 2, 3), ("Registry", 1, 1, 2), ("Global", 1, 1, 1)],
)
async def test_cache_key_types(
    tmp_path: Path, key_type: str, same_image: int, same_registry: int, other_registry: int
) -> None:
    write_plugin(
        tmp_path,
        "plugin",
        f"""answer({{"*.*.*.*:*": {{"username": "u", "password": "p"}}}},
                   cacheKeyType={key_type!r})""",
    )
    providers = providers_for(tmp_path, matchImages=["*.*.*.*:5000", "*.*.*.*:5001"])
    await providers.for_image(ref("127.0.0.1:5000/lab/a:1"))
    await providers.for_image(ref("127.0.0.1:5000/lab/a:2"))  # the same repository
    assert len(runs(tmp_path)) == same_image
    await providers.for_image(ref("127.0.0.1:5000/lab/b:1"))
    assert len(runs(tmp_path)) == same_registry
    await providers.for_image(ref("127.0.0.1:5001/lab/b:1"))
    assert len(runs(tmp_path)) == other_registry


@pytest.mark.parametrize(
    ("default", "fields", "kept_for"),
    [
        ("10m", {}, 600.0),  # no cacheDuration: the config's default
        ("10m", {"cacheDuration": "30s"}, 30.0),  # the answer's own
        ("10m", {"cacheDuration": "0s"}, 0.0),  # explicitly 0: not cached
        ("0s", {}, 0.0),  # no duration and a zero default: not cached
    ],
)
async def test_cache_durations(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    default: str,
    fields: dict[str, str],
    kept_for: float,
) -> None:
    monkeypatch.setenv("ANSWER_FIELDS", json.dumps(fields))
    write_plugin(tmp_path, "plugin", OK_BODY)
    clock = Clock()
    providers = providers_for(tmp_path, clock=clock, defaultCacheDuration=default)
    await providers.for_image(ref())
    clock.now += max(kept_for - 1, 0)
    await providers.for_image(ref())
    assert len(runs(tmp_path)) == (1 if kept_for else 2)
    clock.now += 2
    await providers.for_image(ref())
    assert len(runs(tmp_path)) == (2 if kept_for else 3)


async def test_the_cache_is_bounded_in_bytes(tmp_path: Path) -> None:
    write_plugin(tmp_path, "plugin", OK_BODY.replace("Registry", "Image"))
    write_plugin(
        tmp_path,
        "plugin",
        f"""answer({{"127.0.0.1:5000": {{"username": "u", "password": {SECRET!r}}}}},
                   cacheKeyType="Image")""",
    )
    limits = registry.ProviderLimits(cache_bytes=8 * 1024)
    providers = providers_for(tmp_path, limits=limits)
    for i in range(40):
        await providers.for_image(ref(f"127.0.0.1:5000/lab/app{i}:1"))
    assert 0 < providers.held_bytes <= 8 * 1024
    await providers.for_image(ref("127.0.0.1:5000/lab/app39:1"))  # the newest is kept
    assert len(runs(tmp_path)) == 40
    await providers.for_image(ref("127.0.0.1:5000/lab/app0:1"))  # the oldest went first
    assert len(runs(tmp_path)) == 41


async def test_concurrent_lookups_share_one_run(tmp_path: Path) -> None:
    write_plugin(tmp_path, "plugin", "time.sleep(0.3)\n" + OK_BODY)
    providers = providers_for(tmp_path)
    answers = await asyncio.gather(*(providers.for_image(ref()) for _ in range(5)))
    assert all(a.store.lookup("127.0.0.1:5000") is not None for a in answers)
    assert len(runs(tmp_path)) == 1


async def test_plugin_processes_at_once_are_bounded_whatever_the_lookups(tmp_path: Path) -> None:
    # Distinct repositories with cacheKeyType Image: nothing shared, nothing cached; a flood
    # of reviews must still not fork one plugin each.
    write_plugin(
        tmp_path,
        "plugin",
        """time.sleep(0.2)
answer({request["image"].split("/")[0]: {"username": "u", "password": "p"}},
       cacheKeyType="Image")
""",
    )
    providers = providers_for(tmp_path, limits=registry.ProviderLimits(concurrency=2))
    most = 0

    async def watch() -> None:
        nonlocal most
        while True:
            most = max(most, providers.running)
            await asyncio.sleep(0.01)

    watcher = asyncio.ensure_future(watch())
    answers = await asyncio.gather(
        *(providers.for_image(ref(f"127.0.0.1:5000/lab/app{i}:1")) for i in range(6))
    )
    watcher.cancel()
    assert all(a.store.lookup("127.0.0.1:5000") is not None for a in answers)
    assert len(runs(tmp_path)) == 6
    assert most == 2


def only_failure(provided: registry.Provided) -> str:
    assert len(provided.store) == 0
    (failure,) = provided.failures
    text = str(failure)
    assert "\n" not in text
    assert SECRET not in text
    return text


async def test_an_endless_answer_is_cut_and_refused(tmp_path: Path) -> None:
    write_plugin(
        tmp_path,
        "plugin",
        f"""
        sys.stdout.write('{{"auth": {{"x": {{"password": "{SECRET}' + "A" * (10 << 20))
        sys.stdout.flush()
        time.sleep(30)
        """,
    )
    providers = providers_for(tmp_path, limits=registry.ProviderLimits(output_bytes=64 * 1024))
    started = time.monotonic()
    text = only_failure(await providers.for_image(ref()))
    assert time.monotonic() - started < 10  # killed at the cap, not waited for
    assert text == (
        "registry 127.0.0.1:5000: credential provider plugin: its answer exceeds 65536 bytes: "
        "lab/app"
    )


async def test_a_slow_plugin_is_stopped_at_its_timeout(tmp_path: Path) -> None:
    write_plugin(tmp_path, "plugin", "time.sleep(60)\n" + OK_BODY)
    providers = providers_for(tmp_path, limits=registry.ProviderLimits(timeout=0.5))
    started = time.monotonic()
    text = only_failure(await providers.for_image(ref()))
    assert time.monotonic() - started < 5
    assert "credential provider plugin: no answer within 0.5s" in text


async def test_a_cancelled_lookup_kills_the_plugin(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    write_plugin(
        tmp_path,
        "plugin",
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n",
    )
    providers = providers_for(tmp_path, limits=registry.ProviderLimits(timeout=30))
    task = asyncio.ensure_future(providers.for_image(ref()))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if pid_file.exists() and pid_file.read_text():
            break
    # The review's budget ends: its lookups are cancelled (the shared run goes on only while
    # someone waits for it, and is bounded by its own timeout).
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pid = int(pid_file.read_text())
    for _ in range(100):
        await asyncio.sleep(0.05)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
    else:
        pytest.fail("the plugin still runs after its only lookup was cancelled")
    await asyncio.sleep(0.2)  # the reaped process's pipes close on the loop


async def test_a_failing_plugin_never_leaks_its_stderr(tmp_path: Path) -> None:
    write_plugin(
        tmp_path,
        "plugin",
        f"""
        print("token {SECRET} rejected: " + json.dumps(request), file=sys.stderr)
        sys.exit(3)
        """,
    )
    text = only_failure(await providers_for(tmp_path).for_image(ref()))
    assert text.endswith("credential provider plugin: exited with status 3: lab/app")


async def test_a_missing_binary(tmp_path: Path) -> None:
    text = only_failure(await providers_for(tmp_path).for_image(ref()))
    assert f"plugin binary {tmp_path}/plugin does not exist" in text
    (tmp_path / "plugin").write_text("#!/bin/sh\n")
    text = only_failure(await providers_for(tmp_path).for_image(ref()))
    assert "is not executable" in text


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (f"print('{SECRET} is not JSON')", "its answer is not JSON"),
        (
            f"""answer({{"x": {{"password": "{SECRET}"}}}}, apiVersion="other/v1")""",
            f"its answer's apiVersion is not {API}",
        ),
        (
            f"""answer({{"x": {{"password": "{SECRET}"}}}}, kind="Other")""",
            "its answer's kind is not CredentialProviderResponse",
        ),
        (
            f"""answer({{"x": {{"password": "{SECRET}"}}}}, cacheKeyType="Pod")""",
            "cacheKeyType is not one of Image, Registry, Global",
        ),
        (
            f"""answer({{"x": {{"password": "{SECRET}", "auth": "x"}}}})""",
            "must hold only username and password",
        ),
        (
            f"""answer({{"x": {{"password": "{SECRET}"}}}}, extra=1)""",
            "unknown field 'extra'",
        ),
    ],
)
async def test_unusable_answers(tmp_path: Path, body: str, error: str) -> None:
    write_plugin(tmp_path, "plugin", body)
    assert error in only_failure(await providers_for(tmp_path).for_image(ref()))


# -- ServiceAccount tokens ---------------------------------------------------------------------


class Accounts:
    """The cluster side, faked: one ServiceAccount per name, a token per (account, audience)."""

    def __init__(self, annotations: Mapping[str, str] | None = None) -> None:
        self.annotations = dict(annotations or {})
        self.tokens: list[tuple[str, str, str]] = []

    async def account(self, namespace: str, name: str) -> registry.ServiceAccount:
        if name == "absent":
            raise LookupError(f"serviceaccount {namespace}/{name} not found")
        return registry.ServiceAccount(namespace, name, f"uid-{name}", self.annotations)

    async def token(self, namespace: str, name: str, audience: str) -> str:
        self.tokens.append((namespace, name, audience))
        return f"token-of-{namespace}-{name}-for-{audience}"


TOKEN_BODY = """
answer({request["image"].split("/")[0]: {"username": "u", "password": "derived"}})
"""


def token_providers(
    tmp_path: Path, accounts: Accounts | None, **attributes: Any
) -> registry.CredentialProviders:
    return providers_for(
        tmp_path, accounts=accounts, tokenAttributes={**TOKEN_ATTRIBUTES, **attributes}
    )


async def test_token_mode_sends_the_token_and_annotations(tmp_path: Path) -> None:
    write_plugin(tmp_path, "plugin", TOKEN_BODY)
    accounts = Accounts({"a.io/role": "puller", "a.io/extra": "x", "other": "not asked"})
    providers = token_providers(
        tmp_path,
        accounts,
        requiredServiceAccountAnnotationKeys=["a.io/role"],
        optionalServiceAccountAnnotationKeys=["a.io/extra", "a.io/missing"],
    )
    provided = await providers.for_image(ref(), namespace="team", service_account="builder")
    assert provided.store.lookup("127.0.0.1:5000") is not None
    (run,) = runs(tmp_path)
    assert run["request"]["serviceAccountToken"] == "token-of-team-builder-for-registry.example"
    assert run["request"]["serviceAccountAnnotations"] == {"a.io/role": "puller", "a.io/extra": "x"}
    assert accounts.tokens == [("team", "builder", "registry.example")]


async def test_token_answers_are_cached_per_service_account(tmp_path: Path) -> None:
    write_plugin(tmp_path, "plugin", TOKEN_BODY)
    providers = token_providers(tmp_path, Accounts())
    for _ in range(2):
        await providers.for_image(ref(), namespace="team", service_account="builder")
    assert len(runs(tmp_path)) == 1
    await providers.for_image(ref(), namespace="team", service_account="deployer")
    await providers.for_image(ref(), namespace="other", service_account="builder")
    assert len(runs(tmp_path)) == 3


async def test_token_cache_type_keys_by_the_token(tmp_path: Path) -> None:
    write_plugin(tmp_path, "plugin", TOKEN_BODY)

    class Rotating(Accounts):
        async def token(self, namespace: str, name: str, audience: str) -> str:
            self.tokens.append((namespace, name, audience))
            return f"token-{len(self.tokens)}"

    providers = token_providers(tmp_path, Rotating(), cacheType="Token")
    for _ in range(2):
        await providers.for_image(ref(), namespace="team", service_account="builder")
    assert len(runs(tmp_path)) == 2  # a new token, a new entry


async def test_a_missing_required_annotation_skips_the_plugin(tmp_path: Path) -> None:
    write_plugin(tmp_path, "plugin", TOKEN_BODY)
    providers = token_providers(
        tmp_path, Accounts(), requiredServiceAccountAnnotationKeys=["a.io/role"]
    )
    provided = await providers.for_image(ref(), namespace="team", service_account="builder")
    assert runs(tmp_path) == []
    assert provided.failures == ()
    assert provided.notes == (
        "credential provider plugin not run: serviceaccount team/builder has no annotation "
        "a.io/role",
    )


async def test_without_a_service_account(tmp_path: Path) -> None:
    write_plugin(tmp_path, "plugin", TOKEN_BODY)
    required = token_providers(tmp_path, Accounts())
    assert len((await required.for_image(ref())).store) == 0
    assert runs(tmp_path) == []
    optional = token_providers(tmp_path, Accounts(), requireServiceAccount=False)
    assert len((await optional.for_image(ref())).store) == 1
    (run,) = runs(tmp_path)
    assert "serviceAccountToken" not in run["request"]


async def test_an_unreadable_service_account_is_a_failure(tmp_path: Path) -> None:
    write_plugin(tmp_path, "plugin", TOKEN_BODY)
    provided = await token_providers(tmp_path, Accounts()).for_image(
        ref(), namespace="team", service_account="absent"
    )
    assert "cannot read serviceaccount team/absent: serviceaccount team/absent not found" in (
        only_failure(provided)
    )


async def test_an_echoed_token_needs_the_token_cache_type(tmp_path: Path) -> None:
    body = """answer({"127.0.0.1:5000": {"username": "u",
                                        "password": request["serviceAccountToken"]}})"""
    write_plugin(tmp_path, "plugin", body)
    refused = await token_providers(tmp_path, Accounts()).for_image(
        ref(), namespace="team", service_account="builder"
    )
    assert "returned the ServiceAccount token as the password" in only_failure(refused)
    allowed = await token_providers(tmp_path, Accounts(), cacheType="Token").for_image(
        ref(), namespace="team", service_account="builder"
    )
    assert len(allowed.store) == 1


async def test_token_mode_without_a_cluster_says_so(tmp_path: Path) -> None:
    write_plugin(tmp_path, "plugin", TOKEN_BODY)
    provided = await token_providers(tmp_path, None).for_image(
        ref(), namespace="team", service_account="builder"
    )
    assert runs(tmp_path) == []
    assert "needs a ServiceAccount token" in provided.notes[0]
