"""Image references: the normalisation table, the error messages and grammar properties."""

from __future__ import annotations

import re

import httpx
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from archwarden.reference import InvalidReference, Reference, parse

SHA256 = "sha256:" + "0123456789abcdef" * 4
SHA512 = "sha512:" + "0123456789abcdef" * 8


# -- the normalisation table ---------------------------------------------------------------------

NORMALISED = [
    # text, domain, path, tag, digest
    ("nginx", "docker.io", "library/nginx", "latest", None),
    ("nginx:1.27", "docker.io", "library/nginx", "1.27", None),
    ("library/nginx", "docker.io", "library/nginx", "latest", None),
    ("team/web", "docker.io", "team/web", "latest", None),
    ("team/web/api:v2", "docker.io", "team/web/api", "v2", None),
    ("docker.io/nginx", "docker.io", "library/nginx", "latest", None),
    ("docker.io/library/nginx:1", "docker.io", "library/nginx", "1", None),
    ("docker.io/team/web", "docker.io", "team/web", "latest", None),
    ("index.docker.io/nginx", "docker.io", "library/nginx", "latest", None),
    ("index.docker.io/team/web:3", "docker.io", "team/web", "3", None),
    ("localhost/web", "localhost", "web", "latest", None),
    ("localhost/team/web:1", "localhost", "team/web", "1", None),
    ("localhost:5000/web", "localhost:5000", "web", "latest", None),
    # No '/' at all: always Docker Hub, so the ":5000" is a tag.
    ("localhost:5000", "docker.io", "library/localhost", "5000", None),
    ("localhost", "docker.io", "library/localhost", "latest", None),
    ("registry.test/fixtures/x:tag", "registry.test", "fixtures/x", "tag", None),
    ("127.0.0.1:5000/team/web:1", "127.0.0.1:5000", "team/web", "1", None),
    ("example.com:443/a", "example.com:443", "a", "latest", None),
    ("myhost:5000/a", "myhost:5000", "a", "latest", None),
    ("[::1]:5000/repo", "[::1]:5000", "repo", "latest", None),
    ("[::1]/repo:t", "[::1]", "repo", "t", None),
    ("[2001:db8::1]:443/team/web", "[2001:db8::1]:443", "team/web", "latest", None),
    # The domain may contain uppercase (and an uppercase first component is a domain).
    ("Registry.Example.COM/team/web", "Registry.Example.COM", "team/web", "latest", None),
    ("MyHost/web", "MyHost", "web", "latest", None),
    # Separators inside path components.
    ("ab_c__d---e/f.g", "docker.io", "ab_c__d---e/f.g", "latest", None),
    # A first component with a dot is a domain, even with odd characters after it.
    ("a.b/f-g", "a.b", "f-g", "latest", None),
    # Tags keep their case.
    ("nginx:Latest_1.2-RC", "docker.io", "library/nginx", "Latest_1.2-RC", None),
    ("nginx:_x", "docker.io", "library/nginx", "_x", None),
    ("nginx:" + "t" * 128, "docker.io", "library/nginx", "t" * 128, None),
    # Digests.
    (f"nginx@{SHA256}", "docker.io", "library/nginx", None, SHA256),
    (f"nginx@{SHA512}", "docker.io", "library/nginx", None, SHA512),
    (f"registry.test/a/b@{SHA256}", "registry.test", "a/b", None, SHA256),
    (f"nginx:1.27@{SHA256}", "docker.io", "library/nginx", "1.27", SHA256),
    (f"localhost:5000/web:v1@{SHA256}", "localhost:5000", "web", "v1", SHA256),
    # 64 hex characters are refused only as the whole reference.
    ("team/" + "a" * 64, "docker.io", "team/" + "a" * 64, "latest", None),
    ("a" * 64 + ":tag", "docker.io", "library/" + "a" * 64, "tag", None),
]


@pytest.mark.parametrize(("text", "domain", "path", "tag", "digest"), NORMALISED)
def test_normalisation(
    text: str, domain: str, path: str, tag: str | None, digest: str | None
) -> None:
    ref = parse(text)
    assert ref == Reference(domain=domain, path=path, tag=tag, digest=digest)
    assert ref.name == f"{domain}/{path}"


STRINGS = [
    ("nginx", "docker.io/library/nginx:latest"),
    ("localhost:5000", "docker.io/library/localhost:5000"),
    ("index.docker.io/team/web", "docker.io/team/web:latest"),
    ("[::1]:5000/repo", "[::1]:5000/repo:latest"),
    (f"nginx@{SHA256}", f"docker.io/library/nginx@{SHA256}"),
    (f"nginx:1.27@{SHA256}", f"docker.io/library/nginx:1.27@{SHA256}"),
]


@pytest.mark.parametrize(("text", "expected"), STRINGS)
def test_str_is_fully_qualified(text: str, expected: str) -> None:
    assert str(parse(text)) == expected


def test_target_is_digest_when_both_are_given() -> None:
    ref = parse(f"registry.test/team/web:9.9@{SHA256}")
    assert ref.target == SHA256
    assert ref.tag == "9.9"
    assert ref.short == f"team/web@{SHA256}"


def test_target_and_short_for_tags() -> None:
    ref = parse("registry.test/team/web:9.9")
    assert ref.target == "9.9"
    assert ref.short == "team/web:9.9"
    assert parse("registry.test/team/web").target == "latest"


def test_with_digest_keeps_the_tag() -> None:
    ref = parse("registry.test/team/web:1").with_digest(SHA256)
    assert str(ref) == f"registry.test/team/web:1@{SHA256}"
    assert ref.target == SHA256


# -- refusals ------------------------------------------------------------------------------------

INVALID = [
    # text, words the message must contain
    ("", "empty reference"),
    (" nginx", "whitespace"),
    ("nginx ", "whitespace"),
    ("ngi nx", "whitespace"),
    ("nginx\t", "whitespace"),
    ("nginx\n", "whitespace"),
    ("a" * 64, "64-character hexadecimal"),
    ("0123456789abcdef" * 4, "image ID"),
    ("Nginx", "must be lowercase"),
    ("team/Web", "must be lowercase"),
    ("registry.test/Team/web", "must be lowercase"),
    ("nginx:", "empty tag"),
    ("nginx@", "empty digest"),
    ("nginx:-x", "invalid tag"),
    ("nginx:.x", "invalid tag"),
    ("nginx:a/b", "invalid registry host 'nginx:a'"),  # a ':' makes it a domain
    ("nginx:" + "t" * 129, "invalid tag"),
    ("nginx:t%", "invalid tag"),
    ("nginx@md5:" + "a" * 32, "unsupported digest algorithm 'md5'"),
    ("nginx@blake3:" + "a" * 64, "unsupported digest algorithm 'blake3'"),
    ("nginx@sha256:" + "a" * 63, "sha256 digest must have 64 hex characters, not 63"),
    ("nginx@sha256:" + "a" * 65, "sha256 digest must have 64 hex characters, not 65"),
    ("nginx@sha512:" + "a" * 64, "sha512 digest must have 128 hex characters, not 64"),
    ("nginx@sha256:" + "A" * 64, "digest hex must be lowercase"),
    ("nginx@sha256:" + "g" * 64, "malformed digest"),
    ("nginx@sha256:abc", "malformed digest"),
    ("nginx@sha256", "malformed digest"),
    ("nginx@:" + "a" * 64, "malformed digest"),
    ("[fe80::1%eth0]:5000/repo", "zone IDs are not allowed"),
    ("[::ffff:1.2.3.4]/repo", "invalid registry host"),
    ("[::1]", "invalid"),
    ("[::1]:5000", "invalid repository name"),
    ("registry.test:port/repo", "invalid registry host"),
    ("-bad.test/repo", "invalid registry host"),
    # Hosts httpx cannot put in a URL, or that inet_aton would read as another address.
    ("999.999.999.999/x", "invalid IPv4 address '999.999.999.999'"),
    ("0251.0376.0251.0376/x:1", "invalid IPv4 address"),
    ("01.2.3.4/x", "invalid IPv4 address"),
    ("127.1/x", "invalid IPv4 address"),
    ("0x7f.0.0.1/x", "invalid IPv4 address"),
    ("registry.1234:5000/x", "invalid IPv4 address"),
    ("[1::2::3]/x", "invalid IPv6 address"),
    ("[::::]:5000/x", "invalid IPv6 address"),
    ("registry.test:65536/x", "port 65536 is out of range"),
    ("registry.test/", "empty repository name"),
    ("registry.test//repo", "invalid repository name"),
    ("team/web/", "invalid repository name"),
    ("team/-web", "invalid repository name"),
    ("team/web-", "invalid repository name"),
    ("team/we___b", "invalid repository name"),
    ("team/we..b", "invalid repository name"),
    ("a" * 256, "longer than 255"),
    ("registry.test/" + "a" * 256, "longer than 255"),
    ("x" * 1025, "longer than 1024"),
    ("nginx@sha256:" + "a" * 64 + "@sha256:" + "a" * 64, "malformed digest"),
]


@pytest.mark.parametrize(("text", "problem"), INVALID)
def test_invalid_references_are_refused_with_a_clear_message(text: str, problem: str) -> None:
    with pytest.raises(InvalidReference) as caught:
        parse(text)
    message = str(caught.value)
    assert problem in message
    assert caught.value.reference == text
    shown = text if len(text) <= 120 else text[:117] + "..."
    assert message.startswith(f"invalid image reference {shown!r}: ")


def test_path_length_counts_only_the_path() -> None:
    # distribution/reference v0.6 counts the path alone: a long domain does not count.
    path = "/".join(["a" * 50] * 4) + "/" + "b" * 51  # 255 characters
    assert len(path) == 255
    ref = parse(f"{'h' * 60}.example.com:5000/{path}")
    assert ref.path == path
    with pytest.raises(InvalidReference, match="longer than 255"):
        parse(f"registry.test/{path}x")


def test_docker_hub_library_prefix_counts_towards_the_length() -> None:
    # docker.io/library/<247 chars> is 255 of path; one more is too long.
    assert parse("a" * 247).path == "library/" + "a" * 247
    with pytest.raises(InvalidReference, match="longer than 255"):
        parse("a" * 248)


def test_non_string_is_refused() -> None:
    with pytest.raises(InvalidReference, match="not a string"):
        parse(None)  # type: ignore[arg-type]


def test_invalid_reference_is_a_value_error() -> None:
    error = InvalidReference("x", "bad")
    assert isinstance(error, ValueError)
    assert str(error) == "invalid image reference 'x': bad"
    assert error.problem == "bad"


# -- properties ----------------------------------------------------------------------------------

_alnum = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
_separator = st.sampled_from([".", "_", "__", "-", "--", "---"])


@st.composite
def path_components(draw: st.DrawFn) -> str:
    parts = [draw(_alnum)]
    for _ in range(draw(st.integers(0, 2))):
        parts += [draw(_separator), draw(_alnum)]
    return "".join(parts)


_domain_label = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?", fullmatch=True)
_port = st.integers(0, 65535).map(str)
_ipv6 = st.sampled_from(["::1", "fe80::1", "2001:db8::1", "::", "1:2:3:4:5:6:7:8", "ABCD::ef"])


@st.composite
def domains(draw: st.DrawFn) -> str:
    """Domains that splitDockerDomain recognises as domains."""
    kind = draw(st.sampled_from(["dotted", "port", "localhost", "ipv6", "ipv4", "upper"]))
    if kind == "ipv6":
        host = f"[{draw(_ipv6)}]"
    elif kind == "ipv4":
        host = ".".join(str(draw(st.integers(0, 255))) for _ in range(4))
    elif kind == "localhost":
        host = "localhost"
    elif kind == "upper":
        host = draw(_domain_label)
        assume(host.lower() != host)
    else:
        labels = draw(st.lists(_domain_label, min_size=1 if kind == "port" else 2, max_size=3))
        # A numeric last label (decimal, or hex as inet_aton reads "0x1f") makes the name an
        # IPv4 address (the "ipv4" kind covers those).
        assume(not re.fullmatch(r"[0-9]+|0[xX][0-9a-fA-F]*", labels[-1]))
        host = ".".join(labels)
    port = draw(st.none() | _port) if kind != "port" else draw(_port)
    return host + (f":{port}" if port is not None else "")


_tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", fullmatch=True)
_digests = st.one_of(
    st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(lambda h: "sha256:" + h),
    st.text(alphabet="0123456789abcdef", min_size=128, max_size=128).map(lambda h: "sha512:" + h),
)


@st.composite
def references(draw: st.DrawFn) -> tuple[str, Reference]:
    """A valid reference text from the grammar, and the Reference it must parse to."""
    domain = draw(st.none() | domains())
    components = draw(st.lists(path_components(), min_size=1, max_size=4))
    tag = draw(st.none() | _tags)
    digest = draw(st.none() | _digests)
    path = "/".join(components)
    if domain is None:
        first = components[0]
        # Without a domain the first component must not look like one.
        assume(len(components) == 1 or ("." not in first and first != "localhost"))
    text = (f"{domain}/" if domain else "") + path
    text += (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    assume(text != "a" * 64 and not (len(text) == 64 and set(text) <= set("0123456789abcdef")))
    expected_domain = domain or "docker.io"
    if expected_domain == "index.docker.io":
        expected_domain = "docker.io"
    if expected_domain == "docker.io" and len(components) == 1:
        path = "library/" + path
    assume(len(path) <= 255)
    if tag is None and digest is None:
        tag = "latest"
    return text, Reference(domain=expected_domain, path=path, tag=tag, digest=digest)


@settings(max_examples=400, deadline=None)
@given(references())
@example(("index.docker.io/x", Reference("docker.io", "library/x", "latest")))
@example(("docker.io/x:1", Reference("docker.io", "library/x", "1")))
def test_generated_references_parse_to_their_parts(case: tuple[str, Reference]) -> None:
    text, expected = case
    ref = parse(text)
    assert ref == expected
    assert parse(str(ref)) == ref
    assert ref.target == (expected.digest or expected.tag)


_reference_alphabet = "abcxyz019ABZ.:/@_-[]%+ \t" + "é"


@settings(max_examples=600, deadline=None)
@given(st.text() | st.text(alphabet=_reference_alphabet, max_size=40))
@example("sha256:" + "a" * 64)
@example("a@b:" + "c" * 32)
@example("[::1]:5000/a:b@sha256:" + "a" * 64)
def test_arbitrary_text_raises_only_invalid_reference(text: str) -> None:
    try:
        ref = parse(text)
    except InvalidReference as error:
        assert error.reference == text
        return
    # Anything accepted is a fixed point of str(parse(.)), and a URL httpx can use.
    assert str(parse(str(ref))) == str(ref)
    assert parse(str(ref)) == ref
    httpx.URL(f"https://{ref.domain}/v2/{ref.path}/manifests/{ref.target}")


@settings(max_examples=300, deadline=None)
@given(references())
@example(("1.2.3.4:5000/x", Reference("1.2.3.4:5000", "x", "latest")))
def test_accepted_hosts_make_urls_httpx_accepts(case: tuple[str, Reference]) -> None:
    ref = parse(case[0])
    url = httpx.URL(f"https://{ref.domain}/v2/{ref.path}/manifests/{ref.target}")
    assert url.host


@settings(max_examples=200, deadline=None)
@given(references())
def test_str_is_a_fixed_point(case: tuple[str, Reference]) -> None:
    text, _ = case
    once = str(parse(text))
    assert str(parse(once)) == once
