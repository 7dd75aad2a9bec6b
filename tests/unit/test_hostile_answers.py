"""Whatever a registry sends, only RegistryError leaves the client (item 17 of "hostile
registries"): specific answers that used to escape as other exceptions, then a fuzz test."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archwarden.registry import (
    AuthenticationFailed,
    ClientSettings,
    Credential,
    CredentialStore,
    InvalidManifest,
    RegistryClient,
    RegistryError,
    RegistrySettings,
)

from .fakes import HOST, FakeRegistry, make_client

REF = f"{HOST}/team/a:1"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
TOKEN_CHALLENGE = {"WWW-Authenticate": f'Bearer realm="https://{HOST}/token",service="s"'}


Answer = tuple[int, dict[str, str], bytes]


def response(status: int, headers: dict[str, str] | None = None, content: bytes = b"") -> Answer:
    return status, headers or {}, content


def build(answer: Answer) -> httpx.Response:
    # Header values as UTF-8 bytes, as a hostile server would put them on the wire.
    status, headers, body = answer
    raw = [(k.encode(), v.encode("utf-8", "surrogatepass")) for k, v in headers.items()]
    return httpx.Response(status, headers=raw, content=body)


def answering(*answers: Answer) -> FakeRegistry:
    """A registry that answers every request with the next of ``answers`` (the last repeats)."""
    registry = FakeRegistry()
    queue = list(answers)

    def next_answer(request: httpx.Request) -> httpx.Response:
        return build(queue.pop(0) if len(queue) > 1 else queue[0])

    registry.intercept = next_answer
    return registry


def deep(depth: int = 100_000) -> bytes:
    return b"[" * depth + b"]" * depth


def schema1(format_length: str) -> bytes:
    protected = base64.urlsafe_b64encode(
        f'{{"formatLength":{format_length},"formatTail":"Cn0"}}'.encode()
    ).decode()
    return json.dumps(
        {
            "schemaVersion": 1,
            "architecture": "amd64",
            "signatures": [{"protected": protected.rstrip("=")}],
        }
    ).encode()


HOSTILE: dict[str, tuple[Answer, ...]] = {
    "deeply nested manifest": (
        response(200, headers={"Content-Type": OCI_MANIFEST}, content=deep()),
    ),
    "deeply nested error body": (response(500, content=deep()),),
    "deeply nested token": (
        response(401, headers=TOKEN_CHALLENGE),
        response(200, content=deep()),
    ),
    "schema1 formatLength 1e999": (
        response(200, headers={"Content-Type": SCHEMA1_SIGNED}, content=schema1("1e999")),
    ),
    "400-digit expires_in": (
        response(401, headers=TOKEN_CHALLENGE),
        response(200, content=b'{"token":"t","expires_in":' + b"9" * 400 + b"}"),
    ),
    "Retry-After superscript two": (response(503, headers={"Retry-After": "\u00b2"}),),
    "non-ASCII token": (
        response(401, headers=TOKEN_CHALLENGE),
        response(200, content=json.dumps({"token": "t\u00e9\u20ac"}).encode()),
    ),
    "Location with backslashes": (response(307, headers={"Location": "http://[::1\\\\x]:80/y"}),),
    "Location to an impossible port": (
        response(307, headers={"Location": "http://127.0.0.1:99999/y"}),
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
async def test_hostile_answer_is_a_registry_error(case: str) -> None:
    async with make_client(
        answering(*HOSTILE[case]), max_retries=1, max_retry_after=0.01
    ) as client:
        with pytest.raises(RegistryError) as caught:
            await client.resolve(REF)
    message = str(caught.value)
    assert message.startswith(f"registry {HOST}: ") and "\n" not in message
    assert len(message) < 400


async def test_non_ascii_token_is_an_authentication_failure() -> None:
    async with make_client(answering(*HOSTILE["non-ASCII token"])) as client:
        with pytest.raises(AuthenticationFailed, match="unusable token"):
            await client.resolve(REF)


async def test_nested_manifest_is_an_invalid_manifest() -> None:
    async with make_client(answering(*HOSTILE["deeply nested manifest"])) as client:
        with pytest.raises(InvalidManifest, match="not valid JSON"):
            await client.resolve(REF)


# -- fuzz -------------------------------------------------------------------------------------

_statuses = st.sampled_from([200, 200, 200, 301, 303, 307, 401, 403, 404, 429, 500, 503, 418])
_texts = st.text(max_size=30) | st.sampled_from(["\u00b2", "1e999", "9" * 400, "-1", "nan"])
_header_values = _texts | st.sampled_from(
    [
        f'Bearer realm="https://{HOST}/token",service="s",scope="x"',
        f'Bearer realm="http://{HOST}:1/t",error="invalid_token"',
        'Basic realm="r"',
        'Bearer realm="\\\\\u00e9"',
        "http://[::1\\\\x]/",
        f"https://{HOST}/v2/team/a/manifests/1",
        "/relative",
        "ftp://x/",
        "gzip, gzip",
        OCI_MANIFEST,
        SCHEMA1_SIGNED,
        "application/vnd.oci.image.index.v1+json",
        "sha256:" + "0" * 64,
    ]
)
_headers = st.dictionaries(
    st.sampled_from(
        [
            "WWW-Authenticate",
            "Location",
            "Retry-After",
            "Content-Type",
            "Docker-Content-Digest",
            "Content-Encoding",
        ]
    ),
    _header_values,
    max_size=4,
)
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**500), max_value=10**500)
    | st.floats()
    | _texts,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "token",
                    "access_token",
                    "expires_in",
                    "mediaType",
                    "manifests",
                    "config",
                    "digest",
                    "platform",
                    "architecture",
                    "os",
                    "schemaVersion",
                    "signatures",
                    "protected",
                    "history",
                    "errors",
                    "code",
                    "message",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=12,
)
_bodies = (
    st.binary(max_size=64)
    | _json_values.map(lambda v: json.dumps(v, allow_nan=True).encode())
    | st.sampled_from([deep(5_000), schema1("1e999"), schema1("-5"), b"\xff\xfe"])
)
_responses = st.builds(
    lambda status, headers, body: (status, headers, body), _statuses, _headers, _bodies
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(_responses, min_size=1, max_size=6), st.booleans())
def test_fuzzed_answers_raise_only_registry_errors(
    answers: list[tuple[int, dict[str, str], bytes]], with_credentials: bool
) -> None:
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        return build(queue.pop(0) if len(queue) > 1 else queue[0])

    credentials = CredentialStore(
        {HOST: Credential(username="u", password="p", identity_token="refresh")}
        if with_credentials
        else {}
    )
    settings_ = ClientSettings(
        registries={HOST: RegistrySettings()},
        max_retries=1,
        backoff=0.0,
        max_retry_after=0.0,
        max_redirects=2,
    )

    async def run() -> Any:
        async with RegistryClient(
            settings_, credentials, transport=httpx.MockTransport(handler)
        ) as client:
            return await client.resolve(REF)

    try:
        asyncio.run(run())
    except RegistryError as error:
        assert "\n" not in str(error)
