"""WWW-Authenticate parsing and the bearer token cache."""

from __future__ import annotations

import pytest

from archwarden.registry._auth import (
    DEFAULT_TOKEN_LIFETIME,
    Challenge,
    TokenCache,
    parse_challenges,
    pick_challenge,
)

HUB = (
    'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
    'scope="repository:library/ubuntu:pull"'
)


def test_bearer_with_realm_service_scope() -> None:
    [challenge] = parse_challenges([HUB])
    assert challenge == Challenge(
        "bearer",
        {
            "realm": "https://auth.docker.io/token",
            "service": "registry.docker.io",
            "scope": "repository:library/ubuntu:pull",
        },
    )
    assert challenge.realm == "https://auth.docker.io/token"
    assert challenge.service == "registry.docker.io"
    assert challenge.scopes == ("repository:library/ubuntu:pull",)
    assert challenge.error == ""


def test_basic() -> None:
    assert parse_challenges(['Basic realm="Registry Realm"']) == [
        Challenge("basic", {"realm": "Registry Realm"})
    ]


def test_scheme_and_keys_are_case_insensitive_values_are_not() -> None:
    [challenge] = parse_challenges(['BEARER Realm="https://A/Token", SERVICE="Svc"'])
    assert challenge == Challenge("bearer", {"realm": "https://A/Token", "service": "Svc"})


def test_quoted_strings_with_escapes_and_commas() -> None:
    [challenge] = parse_challenges(
        [r'Bearer realm="https://auth.test/t?a=1,b=2",service="say \"hi\", \\ok",scope="a b"']
    )
    assert challenge.params == {
        "realm": "https://auth.test/t?a=1,b=2",
        "service": 'say "hi", \\ok',
        "scope": "a b",
    }
    assert challenge.scopes == ("a", "b")


def test_unquoted_values_and_spaces_around_equals() -> None:
    [challenge] = parse_challenges(["Bearer realm = https://auth.test/token , service=svc"])
    assert challenge.params == {"realm": "https://auth.test/token", "service": "svc"}


def test_several_challenges_in_one_header() -> None:
    challenges = parse_challenges(
        ['Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"']
    )
    assert challenges == [
        Challenge("newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}),
        Challenge("basic", {"realm": "simple"}),
    ]


def test_several_header_lines() -> None:
    challenges = parse_challenges(['Basic realm="r1"', 'Bearer realm="https://auth.test/token"'])
    assert [c.scheme for c in challenges] == ["basic", "bearer"]
    assert challenges[1].realm == "https://auth.test/token"


def test_error_invalid_token() -> None:
    [challenge] = parse_challenges(
        ['Bearer realm="https://auth.test/token",service="s",error="invalid_token"']
    )
    assert challenge.error == "invalid_token"


def test_error_insufficient_scope_and_several_scopes() -> None:
    [challenge] = parse_challenges(
        [
            'Bearer realm="https://auth.test/token",scope="repository:a:pull '
            'repository:b:pull,push",error="insufficient_scope"'
        ]
    )
    assert challenge.error == "insufficient_scope"
    assert challenge.scopes == ("repository:a:pull", "repository:b:pull,push")


def test_empty_and_garbage_headers() -> None:
    assert parse_challenges([]) == []
    assert parse_challenges([""]) == []
    assert parse_challenges([" , ,"]) == []
    # Unterminated quotes take what there is instead of failing.
    assert parse_challenges(['Bearer realm="https://x']) == [
        Challenge("bearer", {"realm": "https://x"})
    ]


def test_bearer_is_preferred_over_basic() -> None:
    both = parse_challenges(['Basic realm="r"', 'Bearer realm="https://auth.test/token"'])
    picked = pick_challenge(both)
    assert picked is not None and picked.scheme == "bearer"
    picked = pick_challenge(parse_challenges(['Bearer realm="b", Basic realm="r"']))
    assert picked is not None and picked.scheme == "bearer"


def test_pick_basic_alone_and_ignore_unknown_schemes() -> None:
    picked = pick_challenge(parse_challenges(['Negotiate abc, Basic realm="r"']))
    assert picked == Challenge("basic", {"realm": "r"})
    assert pick_challenge(parse_challenges(["Negotiate", "Digest realm=x"])) is None
    assert pick_challenge([]) is None


# -- token cache ---------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


REALM, SERVICE = "https://auth.test/token", "registry.test"


def test_token_hit_before_expiry_and_refresh_margin() -> None:
    clock = Clock()
    cache = TokenCache(clock)
    cache.put(REALM, SERVICE, ["repository:a:pull"], "tok", 300)
    assert cache.get(REALM, SERVICE, ["repository:a:pull"]) == "tok"
    clock.now += 289.9  # 10 s refresh margin before the 300 s lifetime
    assert cache.get(REALM, SERVICE, ["repository:a:pull"]) == "tok"
    clock.now += 0.1
    assert cache.get(REALM, SERVICE, ["repository:a:pull"]) is None
    assert len(cache) == 0  # expired entries are dropped


def test_token_expiry() -> None:
    clock = Clock()
    cache = TokenCache(clock)
    cache.put(REALM, SERVICE, ["s"], "tok", 300)
    clock.now += 301
    assert cache.get(REALM, SERVICE, ["s"]) is None


def test_token_default_lifetime_is_60_seconds() -> None:
    assert DEFAULT_TOKEN_LIFETIME == 60.0
    clock = Clock()
    cache = TokenCache(clock)
    cache.put(REALM, SERVICE, ["s"], "tok", 0)  # no expires_in
    clock.now += 49.9
    assert cache.get(REALM, SERVICE, ["s"]) == "tok"
    clock.now += 0.1  # 60 s minus the 10 s margin
    assert cache.get(REALM, SERVICE, ["s"]) is None


def test_short_lived_tokens_get_a_proportional_margin() -> None:
    clock = Clock()
    cache = TokenCache(clock)
    cache.put(REALM, SERVICE, ["s"], "tok", 20)  # margin = 20 / 4 = 5 s
    clock.now += 14.9
    assert cache.get(REALM, SERVICE, ["s"]) == "tok"
    clock.now += 0.1
    assert cache.get(REALM, SERVICE, ["s"]) is None


def test_token_key_uses_sorted_scopes() -> None:
    cache = TokenCache(Clock())
    cache.put(REALM, SERVICE, ["repository:b:pull", "repository:a:pull"], "tok", 300)
    assert cache.get(REALM, SERVICE, ("repository:a:pull", "repository:b:pull")) == "tok"
    assert cache.get(REALM, SERVICE, ["repository:a:pull"]) is None
    assert cache.get(REALM, "other-service", ["repository:a:pull", "repository:b:pull"]) is None
    assert cache.get("https://other/token", SERVICE, ["repository:a:pull"]) is None
    assert TokenCache.key(REALM, SERVICE, ["b", "a", "b"]) == (REALM, SERVICE, ("a", "b"))


def test_token_drop() -> None:
    cache = TokenCache(Clock())
    cache.put(REALM, SERVICE, ["s"], "tok", 300)
    cache.put(REALM, SERVICE, ["t"], "tok2", 300)
    cache.drop(REALM, SERVICE, ["s"])
    cache.drop(REALM, SERVICE, ["missing"])
    assert cache.get(REALM, SERVICE, ["s"]) is None
    assert cache.get(REALM, SERVICE, ["t"]) == "tok2"
    assert len(cache) == 1


@pytest.mark.parametrize("expires_in", [-5, 0])
def test_non_positive_lifetimes_use_the_default(expires_in: float) -> None:
    clock = Clock()
    cache = TokenCache(clock)
    cache.put(REALM, SERVICE, ["s"], "tok", expires_in)
    clock.now += 30
    assert cache.get(REALM, SERVICE, ["s"]) == "tok"
