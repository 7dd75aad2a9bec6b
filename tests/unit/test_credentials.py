"""Docker config / dockerconfigjson credentials."""

from __future__ import annotations

import base64
import gc
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from archwarden.registry import Credential, CredentialStore, InvalidDockerConfig, _credentials

SECRET = "s3cr3t-p4ss:word"


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def store(auths: dict[str, Any]) -> CredentialStore:
    return CredentialStore.from_docker_config(json.dumps({"auths": auths}))


def test_auth_is_base64_user_colon_password_split_at_first_colon() -> None:
    s = store({"registry.test": {"auth": b64(f"alice:{SECRET}")}})
    assert s.lookup("registry.test") == Credential(username="alice", password=SECRET)


def test_auth_trailing_nuls_are_trimmed() -> None:
    s = store({"registry.test": {"auth": b64(b"alice:pw\x00\x00")}})
    cred = s.lookup("registry.test")
    assert cred is not None
    assert (cred.username, cred.password) == ("alice", "pw")


def test_auth_wins_over_username_password() -> None:
    s = store({"registry.test": {"auth": b64("alice:a"), "username": "bob", "password": "b"}})
    assert s.lookup("registry.test") == Credential(username="alice", password="a")


def test_username_password() -> None:
    s = store({"registry.test": {"username": "bob", "password": "pw"}})
    assert s.lookup("registry.test") == Credential(username="bob", password="pw")


def test_identity_token() -> None:
    s = store({"registry.test": {"identitytoken": "refresh-123"}})
    cred = s.lookup("registry.test")
    assert cred == Credential(identity_token="refresh-123")
    assert cred is not None and not cred.has_basic


def test_registry_token() -> None:
    s = store({"registry.test": {"registrytoken": "bearer-123"}})
    assert s.lookup("registry.test") == Credential(registry_token="bearer-123")


def test_empty_entries_are_skipped() -> None:
    s = CredentialStore.from_docker_config(
        json.dumps(
            {
                "auths": {"helper.test": {}, "registry.test": {"auth": b64("a:b")}},
                "credsStore": "desktop",
                "credHelpers": {"helper.test": "ecr-login"},
            }
        )
    )
    assert s.hosts == ["registry.test"]
    assert s.lookup("helper.test") is None
    assert len(s) == 1


def test_entries_of_the_wrong_type_are_skipped() -> None:
    s = store({"a.test": "nope", "b.test": {"auth": 5}, "c.test": {"username": "u"}})
    assert s.hosts == ["c.test"]


@pytest.mark.parametrize(
    "key", ["https://index.docker.io/v1/", "docker.io", "registry-1.docker.io", "index.docker.io"]
)
def test_docker_hub_aliases(key: str) -> None:
    s = store({key: {"auth": b64("hub:pw")}})
    expected = Credential(username="hub", password="pw")
    assert s.hosts == ["docker.io"]
    for host in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        assert s.lookup(host) == expected


@pytest.mark.parametrize(
    "key",
    [
        "registry.test",
        "https://registry.test",
        "http://registry.test",
        "https://registry.test/v2/",
        "http://registry.test/some/path",
        "Registry.Test",
    ],
)
def test_key_normalisation(key: str) -> None:
    s = store({key: {"auth": b64("a:b")}})
    assert s.lookup("registry.test") == Credential(username="a", password="b")


def test_ports_are_part_of_the_host() -> None:
    s = store({"https://registry.test:5000/": {"auth": b64("a:b")}})
    assert s.hosts == ["registry.test:5000"]
    assert s.lookup("registry.test:5000") is not None
    assert s.lookup("registry.test") is None


def test_legacy_dockercfg_without_auths() -> None:
    legacy = {"https://index.docker.io/v1/": {"auth": b64("old:pw"), "email": "x@example.com"}}
    s = CredentialStore.from_docker_config(json.dumps(legacy).encode())
    assert s.lookup("docker.io") == Credential(username="old", password="pw")


def test_mapping_input_is_accepted() -> None:
    s = CredentialStore.from_docker_config({"auths": {"registry.test": {"auth": b64("a:b")}}})
    assert s.lookup("registry.test") == Credential(username="a", password="b")


def _assert_no_secret(error: BaseException, *secrets: str) -> None:
    text = str(error) + repr(error)
    for secret in secrets:
        assert secret not in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"auths": {"registry.test": {"auth": "' + SECRET, "docker config is not valid JSON"),
        (b"\xff\xfe" + SECRET.encode(), "docker config is not valid JSON"),
        ("[" * 100_000, "docker config is not valid JSON"),  # RecursionError, not a traceback
        ("[1, 2]", "docker config must be a JSON object"),
        ('{"auths": ["' + SECRET + '"]}', "docker config 'auths' must be an object"),
    ],
)
def test_malformed_json(content: str | bytes, message: str) -> None:
    with pytest.raises(InvalidDockerConfig) as caught:
        CredentialStore.from_docker_config(content)
    assert str(caught.value) == message
    _assert_no_secret(caught.value, SECRET)


def test_bad_base64_names_the_key_not_the_secret() -> None:
    with pytest.raises(InvalidDockerConfig) as caught:
        store({"registry.test": {"auth": SECRET[:5]}})  # "s3cr3" is not valid padding
    assert str(caught.value) == "auth for 'registry.test' is not base64 of user:password"
    _assert_no_secret(caught.value, SECRET[:5])


def test_auth_without_colon() -> None:
    encoded = b64("nocolonhere")
    with pytest.raises(InvalidDockerConfig) as caught:
        store({"registry.test": {"auth": encoded}})
    assert str(caught.value) == "auth for 'registry.test' has no ':' between user and password"
    _assert_no_secret(caught.value, "nocolonhere", encoded)


def test_auth_not_utf8() -> None:
    with pytest.raises(InvalidDockerConfig, match="is not base64 of user:password"):
        store({"registry.test": {"auth": b64(b"\xff\xfe:pw")}})


def test_repr_never_shows_secrets() -> None:
    cred = Credential(
        username="alice", password=SECRET, identity_token="idtok-9", registry_token="regtok-9"
    )
    text = repr(cred) + str(cred)
    assert "alice" in text
    for secret in (SECRET, "idtok-9", "regtok-9"):
        assert secret not in text
    s = store(
        {
            "registry.test": {"auth": b64(f"alice:{SECRET}")},
            "b.test": {"identitytoken": "idtok-9"},
            "c.test": {"registrytoken": "regtok-9"},
        }
    )
    shown = repr(s) + str(s)
    assert shown == repr(s) + repr(s)
    assert repr(s) == "CredentialStore(hosts=['b.test', 'c.test', 'registry.test'])"
    for secret in (SECRET, "idtok-9", "regtok-9", b64(f"alice:{SECRET}")):
        assert secret not in shown


def test_basic_header() -> None:
    cred = Credential(username="alice", password="pw:x")
    assert cred.basic_header() == "Basic " + b64("alice:pw:x")


def test_merged_later_stores_win() -> None:
    a = store({"registry.test": {"auth": b64("a:1")}, "only-a.test": {"auth": b64("x:y")}})
    b = store({"registry.test": {"auth": b64("b:2")}})
    merged = a.merged(b)
    assert merged.lookup("registry.test") == Credential(username="b", password="2")
    assert merged.hosts == ["only-a.test", "registry.test"]
    assert a.lookup("registry.test") == Credential(username="a", password="1")  # unchanged


def test_from_files(tmp_path: Path) -> None:
    first = tmp_path / "one.json"
    second = tmp_path / "two.json"
    first.write_text(json.dumps({"auths": {"registry.test": {"auth": b64("a:1")}}}))
    second.write_text(json.dumps({"auths": {"registry.test": {"auth": b64("b:2")}}}))
    s = CredentialStore.from_files([str(first), str(second)])
    assert s.lookup("registry.test") == Credential(username="b", password="2")


def test_from_files_errors_name_the_file_not_the_content(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"auths": {"r": {"auth": "' + SECRET)
    with pytest.raises(InvalidDockerConfig) as caught:
        CredentialStore.from_files([str(broken)])
    assert str(caught.value) == f"{broken}: docker config is not valid JSON"
    _assert_no_secret(caught.value, SECRET)
    missing = tmp_path / "missing.json"
    with pytest.raises(InvalidDockerConfig, match=r"cannot read docker config .*missing\.json"):
        CredentialStore.from_files([str(missing)])


def test_invalid_json_error_keeps_no_reference_to_the_document() -> None:
    secret = '{"auths": {"r.example": {"password": "hunter2-secret"}'  # missing a brace
    with pytest.raises(InvalidDockerConfig) as caught:
        CredentialStore.from_docker_config(secret)
    chain = []
    current: BaseException | None = caught.value
    while current is not None:
        chain.append(current)
        current = current.__cause__ or current.__context__
    assert chain == [caught.value]
    assert "hunter2" not in repr(caught.value.args)


def test_a_config_longer_than_max_bytes_is_refused_unparsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    content = json.dumps({"auths": {"registry.test": {"auth": b64(f"alice:{SECRET}")}}})
    limit = len(content)
    s = CredentialStore.from_docker_config(content.encode(), max_bytes=limit)  # just fits
    assert s.hosts == ["registry.test"]
    parsed: list[object] = []
    monkeypatch.setattr(_credentials, "_parse_json", parsed.append)
    with pytest.raises(InvalidDockerConfig) as caught:
        CredentialStore.from_docker_config(content + " ", max_bytes=limit)
    assert str(caught.value) == f"docker config is larger than {limit} bytes"
    assert parsed == []
    _assert_no_secret(caught.value, SECRET, b64(f"alice:{SECRET}"))


def test_from_files_reads_no_more_than_max_bytes_of_a_file(tmp_path: Path) -> None:
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps({"auths": {"registry.test": {"password": "p" * (1 << 20)}}}))
    with pytest.raises(InvalidDockerConfig) as caught:
        CredentialStore.from_files([str(huge)], max_bytes=4096)
    assert str(caught.value) == f"{huge}: docker config is larger than 4096 bytes"
    # An endless file ends the same way: at most max_bytes + 1 of it is read.
    with pytest.raises(InvalidDockerConfig) as caught:
        CredentialStore.from_files(["/dev/zero"], max_bytes=4096)
    assert str(caught.value) == "/dev/zero: docker config is larger than 4096 bytes"


def _kept_by_a_parse(content: bytes) -> tuple[CredentialStore, int]:
    CredentialStore.from_docker_config(content)  # first-use allocations are not the store's
    gc.collect()
    tracemalloc.start()
    try:
        parsed = CredentialStore.from_docker_config(content)
        gc.collect()
        kept, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return parsed, kept


@pytest.mark.parametrize(
    "auths",
    [
        {f"h{i}": {"username": f"u{i}"} for i in range(20_000)},  # the most per JSON byte
        {f"r{i}.example": {"auth": b64(f"user{i}:password{i}")} for i in range(5_000)},
        {f"{i}.dkr.ecr.test": {"auth": b64("AWS:" + "k" * 1500)} for i in range(100)},
        {"registry.test": {"username": "u", "password": "p" * 300_000}},
        {"registry.test": {"identitytoken": "t" * 40}},
    ],
    ids=["tiny-entries", "many-hosts", "long-tokens", "one-huge-password", "one-host"],
)
def test_held_bytes_is_never_below_what_a_parsed_store_keeps(auths: dict[str, Any]) -> None:
    parsed, kept = _kept_by_a_parse(json.dumps({"auths": auths}).encode())
    assert kept <= parsed.held_bytes <= kept * 1.2 + _credentials.STORE_BYTES
