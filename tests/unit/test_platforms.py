"""Platforms: containerd's Normalize, specifier parsing, node matching and display."""

from __future__ import annotations

import pytest

from archwarden import platforms
from archwarden.platforms import InvalidPlatform, Platform, format_all, node_can_run, normalize

NORMALIZE = [
    # (os, arch, variant) -> (os, arch, variant)
    (("linux", "amd64", ""), ("linux", "amd64", "")),
    (("Linux", "AMD64", ""), ("linux", "amd64", "")),
    (("linux", "x86_64", ""), ("linux", "amd64", "")),
    (("linux", "x86-64", ""), ("linux", "amd64", "")),
    (("linux", "amd64", "v1"), ("linux", "amd64", "")),
    (("linux", "amd64", "v2"), ("linux", "amd64", "v2")),
    (("linux", "amd64", "v3"), ("linux", "amd64", "v3")),
    (("linux", "amd64", "V4"), ("linux", "amd64", "v4")),
    (("linux", "i386", ""), ("linux", "386", "")),
    (("linux", "i386", "foo"), ("linux", "386", "")),
    (("linux", "386", ""), ("linux", "386", "")),
    (("linux", "aarch64", ""), ("linux", "arm64", "")),
    (("linux", "arm64", "8"), ("linux", "arm64", "")),
    (("linux", "arm64", "v8"), ("linux", "arm64", "")),
    (("linux", "arm64", "v8.0"), ("linux", "arm64", "")),
    (("linux", "aarch64", "v8"), ("linux", "arm64", "")),
    (("linux", "arm64", "9"), ("linux", "arm64", "v9")),
    (("linux", "arm64", "9.0"), ("linux", "arm64", "v9")),
    (("linux", "arm64", "v9.0"), ("linux", "arm64", "v9")),
    (("linux", "arm64", "v8.2"), ("linux", "arm64", "v8.2")),
    (("linux", "arm64", "armv8"), ("linux", "arm64", "armv8")),
    (("linux", "armhf", ""), ("linux", "arm", "v7")),
    (("linux", "armhf", "v6"), ("linux", "arm", "v7")),
    (("linux", "armel", ""), ("linux", "arm", "v6")),
    (("linux", "arm", ""), ("linux", "arm", "v7")),
    (("linux", "arm", "7"), ("linux", "arm", "v7")),
    (("linux", "arm", "v7"), ("linux", "arm", "v7")),
    (("linux", "arm", "5"), ("linux", "arm", "v5")),
    (("linux", "arm", "6"), ("linux", "arm", "v6")),
    (("linux", "arm", "8"), ("linux", "arm", "v8")),
    (("linux", "arm", "v6"), ("linux", "arm", "v6")),
    (("linux", "arm", "armv7"), ("linux", "arm", "armv7")),
    (("linux", "arm", "unrecognized-present"), ("linux", "arm", "unrecognized-present")),
    (("macos", "arm64", ""), ("darwin", "arm64", "")),
    (("MacOS", "amd64", ""), ("darwin", "amd64", "")),
    (("darwin", "arm64", ""), ("darwin", "arm64", "")),
    (("Windows", "AMD64", ""), ("windows", "amd64", "")),
    (("linux", "ppc64le", ""), ("linux", "ppc64le", "")),
    (("linux", "riscv64", "rva20u64"), ("linux", "riscv64", "rva20u64")),
]


@pytest.mark.parametrize(("raw", "expected"), NORMALIZE)
def test_normalize(raw: tuple[str, str, str], expected: tuple[str, str, str]) -> None:
    p = normalize(*raw)
    assert (p.os, p.architecture, p.variant) == expected


def test_normalize_keeps_windows_version_and_sorts_features() -> None:
    p = normalize("windows", "amd64", "", "10.0.20348.1129", ["win32k", "b", "win32k"])
    assert p == Platform("windows", "amd64", "", "10.0.20348.1129", ("b", "win32k"))


def test_normalize_tolerates_missing_values() -> None:
    assert normalize("", "") == Platform("", "", "")


PARSE = [
    ("linux/amd64", Platform("linux", "amd64")),
    ("linux/arm64/v8", Platform("linux", "arm64")),
    ("linux/arm64/v9.0", Platform("linux", "arm64", "v9")),
    ("linux/arm", Platform("linux", "arm", "v7")),
    ("linux/arm/v6", Platform("linux", "arm", "v6")),
    ("linux/arm/6", Platform("linux", "arm", "v6")),
    ("linux/armhf", Platform("linux", "arm", "v7")),
    ("linux/aarch64", Platform("linux", "arm64")),
    ("linux/x86_64", Platform("linux", "amd64")),
    ("linux/amd64/v1", Platform("linux", "amd64")),
    ("linux/amd64/v3", Platform("linux", "amd64", "v3")),
    ("windows/amd64", Platform("windows", "amd64")),
    ("macos/arm64", Platform("darwin", "arm64")),
    ("LINUX/ARM/V7", Platform("linux", "arm", "v7")),
    ("arm64", Platform("linux", "arm64")),
    (" linux/s390x ", Platform("linux", "s390x")),
]


@pytest.mark.parametrize(("spec", "expected"), PARSE)
def test_parse(spec: str, expected: Platform) -> None:
    assert platforms.parse(spec) == expected


@pytest.mark.parametrize("spec", ["", " ", "/", "linux/", "/amd64", "linux//v7", "a/b/c/d"])
def test_parse_refuses(spec: str) -> None:
    with pytest.raises(InvalidPlatform, match=r"expected os/arch\[/variant\]") as caught:
        platforms.parse(spec)
    assert repr(spec) in str(caught.value)


CANONICAL = [
    (Platform("linux", "amd64"), "linux/amd64"),
    (Platform("linux", "arm", "v7"), "linux/arm/v7"),
    (platforms.parse("linux/arm64/v8"), "linux/arm64"),
    (platforms.parse("linux/arm"), "linux/arm/v7"),
    (Platform("windows", "amd64", "", "10.0.17763.3532"), "windows/amd64"),
]


@pytest.mark.parametrize(("platform", "text"), CANONICAL)
def test_canonical(platform: Platform, text: str) -> None:
    assert platform.canonical == text
    assert str(platform) == text


def test_detailed_shows_version_and_features() -> None:
    p = normalize("windows", "amd64", "", "10.0.17763.3532", ["win32k"])
    assert p.detailed == "windows/amd64 [os.version=10.0.17763.3532 os.features=win32k]"
    assert Platform("linux", "amd64").detailed == "linux/amd64"
    assert normalize("linux", "amd64", os_features=["sse4"]).detailed == (
        "linux/amd64 [os.features=sse4]"
    )


def test_to_json_and_from_json() -> None:
    data = {
        "os": "windows",
        "architecture": "amd64",
        "os.version": "10.0.20348.1129",
        "os.features": ["win32k"],
        "features": ["sse"],  # reserved: ignored
    }
    p = platforms.from_json(data)
    assert p == Platform("windows", "amd64", "", "10.0.20348.1129", ("win32k",))
    assert p.to_json() == {
        "os": "windows",
        "architecture": "amd64",
        "os.version": "10.0.20348.1129",
        "os.features": ["win32k"],
    }
    assert platforms.from_json({"os": "linux", "architecture": "arm"}).to_json() == {
        "os": "linux",
        "architecture": "arm",
        "variant": "v7",
    }
    # Non-string junk is ignored, not crashed on.
    assert platforms.from_json({"os": 1, "architecture": None, "os.features": "x"}) == Platform(
        "", ""
    )


def test_is_unknown() -> None:
    assert Platform("unknown", "unknown").is_unknown
    assert Platform("linux", "unknown").is_unknown
    assert not Platform("linux", "amd64").is_unknown


def test_format_all_sorts_and_deduplicates() -> None:
    items = [
        platforms.parse("linux/arm"),
        platforms.parse("linux/arm/v7"),
        platforms.parse("linux/amd64"),
        normalize("linux", "amd64", os_features=["sse4"]),
        platforms.parse("linux/arm/v6"),
    ]
    assert format_all(items) == ["linux/amd64", "linux/arm/v6", "linux/arm/v7"]
    assert format_all([]) == []


# -- node matching -------------------------------------------------------------------------------


def _p(spec: str, os_version: str = "") -> Platform:
    p = platforms.parse(spec)
    return normalize(p.os, p.architecture, p.variant, os_version)


MATCHES = [
    # node, image, runs?
    ("linux/amd64", "linux/amd64", True),
    ("linux/amd64", "linux/386", True),
    ("linux/386", "linux/amd64", False),
    ("linux/amd64", "linux/arm64", False),
    ("linux/amd64", "linux/amd64/v2", False),  # a node without a level is v1, as containerd's
    ("linux/amd64/v3", "linux/amd64/v2", True),
    ("linux/amd64/v3", "linux/amd64", True),
    ("linux/amd64/v2", "linux/amd64/v3", False),
    ("linux/amd64/v3", "linux/386", True),
    ("linux/arm/v7", "linux/arm/v7", True),
    ("linux/arm/v7", "linux/arm/v6", True),
    ("linux/arm/v7", "linux/arm/v5", True),
    ("linux/arm/v7", "linux/arm/v8", False),
    ("linux/arm", "linux/arm/v6", True),  # arm nodes are v7
    ("linux/arm", "linux/arm/v8", False),
    ("linux/arm/v6", "linux/arm/v7", False),
    ("linux/arm/v6", "linux/arm/v5", True),
    ("linux/arm/v7", "linux/arm/armv7", False),  # an unrecognised variant matches only itself
    ("linux/arm64", "linux/arm64", True),
    ("linux/arm64", "linux/arm64/v8", True),
    # containerd's arm64 -> arm fallback pulls them, but CPUs without AArch32 (Graviton4,
    # Axion, Cobalt, AmpereOne) cannot execute them: off unless configured (below).
    ("linux/arm64", "linux/arm/v7", False),
    ("linux/arm64", "linux/arm/v8", False),
    ("linux/arm64", "linux/arm/v6", False),
    ("linux/arm64", "linux/arm/v5", False),
    ("linux/arm64", "linux/arm/armv7", False),
    ("linux/arm64", "linux/amd64", False),
    ("linux/arm/v7", "linux/arm64", False),
    ("linux/amd64", "windows/amd64", False),
    ("windows/amd64", "linux/amd64", False),
    ("windows/amd64", "windows/amd64", True),
    ("linux/s390x", "linux/s390x", True),
    ("linux/ppc64le", "linux/s390x", False),
]


@pytest.mark.parametrize(("node", "image", "expected"), MATCHES)
def test_node_can_run(node: str, image: str, expected: bool) -> None:
    assert node_can_run(platforms.parse(node), platforms.parse(image)) is expected


WINDOWS = [
    # node os.version, image os.version, runs?
    ("10.0.17763.1234", "10.0.17763.1", True),
    ("10.0.17763", "10.0.17763.5000", True),
    ("10.0.17763", "10.0.20348.1129", False),
    ("10.0.17763", "10.0.14393.1", False),
    ("10.0.20348", "10.0.20348.1129", True),
    ("10.0.20348.1", "10.0.20348.2700", True),  # the revision does not count
    ("10.0.20348", "10.0.17763.3532", False),
    ("10.0.20348", "10.0.26100.1", False),  # newer than the host
    ("10.0.26100", "10.0.20348.1129", True),
    ("10.0.26100", "10.0.26100.1742", True),
    ("10.0.26100", "10.0.17763.3532", False),
    ("10.0.25398", "10.0.20348.1", True),
    ("10.0.26100", "6.3.9600.1", False),  # major.minor must match
    ("", "10.0.17763.1", True),  # an unknown host version accepts any
    ("10.0.17763", "", True),  # an image without os.version runs anywhere
]


@pytest.mark.parametrize(("node_version", "image_version", "expected"), WINDOWS)
def test_windows_os_version(node_version: str, image_version: str, expected: bool) -> None:
    node = _p("windows/amd64", node_version)
    image = _p("windows/amd64", image_version)
    assert node_can_run(node, image) is expected


def test_windows_os_features_must_be_on_the_node_except_win32k() -> None:
    image = normalize("windows", "amd64", "", "10.0.20348.1", ["gpu"])
    bare = normalize("windows", "amd64", "", "10.0.20348")
    full = normalize("windows", "amd64", "", "10.0.20348", ["gpu"])
    assert node_can_run(full, image)
    assert not node_can_run(bare, image)
    # containerd strips win32k before matching (test_platforms_containerd.py).
    assert node_can_run(bare, normalize("windows", "amd64", "", "10.0.20348.1", ["win32k"]))


def test_linux_os_features_are_ignored() -> None:
    image = normalize("linux", "amd64", os_features=["sse4"])
    assert node_can_run(platforms.parse("linux/amd64"), image)


def test_platforms_order_and_hash() -> None:
    a, b = platforms.parse("linux/arm/v7"), platforms.parse("linux/arm")
    assert a == b and hash(a) == hash(b)
    assert sorted([platforms.parse("linux/arm64"), platforms.parse("linux/amd64")]) == [
        platforms.parse("linux/amd64"),
        platforms.parse("linux/arm64"),
    ]


ARM64_VARIANTS = [
    # node variant, image variant, runs? (containerd's Only vector for arm64)
    ("v8.2", "", True),
    ("v8.2", "v8", True),
    ("v8.2", "v8.1", True),
    ("v8.2", "v8.2", True),
    ("v8.2", "v8.3", False),
    ("v8.2", "v9", False),
    ("v9", "v9", True),
    ("v9", "", True),
    ("v9", "v8.5", True),
    ("v9", "v8.6", False),
    ("v9", "v9.1", False),
    ("v9.2", "v9.1", True),
    ("v9.2", "v8.7", True),
    ("v9.2", "v8.8", False),
    ("v9.4", "v8.9", True),
    ("v9.5", "v8.9", True),
]


@pytest.mark.parametrize(("node_variant", "image_variant", "expected"), ARM64_VARIANTS)
def test_arm64_variant_fallbacks(node_variant: str, image_variant: str, expected: bool) -> None:
    node = normalize("linux", "arm64", node_variant)
    image = normalize("linux", "arm64", image_variant)
    assert node_can_run(node, image) is expected


@pytest.mark.parametrize("node_variant", ["v8.2", "v9", "v9.3"])
def test_arm64_nodes_with_a_variant_still_run_32_bit_arm(node_variant: str) -> None:
    node = normalize("linux", "arm64", node_variant)
    for variant in ("v5", "v6", "v7", "v8"):
        assert node_can_run(node, normalize("linux", "arm", variant), platforms.ALL_FALLBACKS)


FALLBACKS = [
    # node, image, runs with the fallback allowed?, runs by default?
    ("linux/arm64", "linux/arm/v7", True, False),
    ("linux/arm64", "linux/arm/v8", True, False),
    ("linux/arm64", "linux/arm/v6", True, False),
    ("linux/arm64", "linux/arm/v5", True, False),
    ("linux/arm64", "linux/arm/armv7", False, False),
    ("linux/amd64", "linux/386", True, True),
    ("linux/amd64/v3", "linux/386", True, True),
    ("linux/arm64", "linux/386", False, False),
    ("linux/amd64", "linux/arm/v7", False, False),
]


@pytest.mark.parametrize(("node", "image", "allowed", "default"), FALLBACKS)
def test_cross_architecture_fallbacks_are_configurable(
    node: str, image: str, allowed: bool, default: bool
) -> None:
    n, i = platforms.parse(node), platforms.parse(image)
    assert node_can_run(n, i, platforms.ALL_FALLBACKS) is allowed
    assert node_can_run(n, i) is default
    assert node_can_run(n, i, platforms.DEFAULT_FALLBACKS) is default
    none = platforms.Fallbacks(arm32_on_arm64=False, i386_on_amd64=False)
    assert node_can_run(n, i, none) is False


NODE_SPECS = [
    # --platforms entry, image, runs?
    ("linux/arm64/v8", "linux/arm64/v9", False),
    ("linux/arm64/v8", "linux/arm64/v8.2", False),
    ("linux/arm64/v8", "linux/arm64", True),
    ("linux/arm64/v8", "linux/arm64/v8.0", True),
    ("linux/arm64/v8", "linux/arm/v7", False),  # no AArch32 unless configured
    ("linux/aarch64/8", "linux/arm64/v9", False),
    ("linux/arm64/v8.0", "linux/arm64/v9", False),
    ("linux/arm64", "linux/arm64/v9", False),  # no variant written: v8, as containerd's
    ("linux/arm64/v9", "linux/arm64/v8", True),
]


@pytest.mark.parametrize(("node", "image", "expected"), NODE_SPECS)
def test_node_specs_arm64_is_v8(node: str, image: str, expected: bool) -> None:
    # containerd normalises arm64/v8 to arm64 and matches that as v8, with or without a variant
    # written (its default platform on every arm64 machine is v8).
    assert node_can_run(platforms.parse(node), platforms.parse(image)) is expected


def test_node_spec_is_named_canonically() -> None:
    assert platforms.parse("linux/aarch64/8").canonical == "linux/arm64"
    assert platforms.parse("linux/arm64").canonical == "linux/arm64"
    assert platforms.parse("linux/arm/7") == platforms.parse("linux/arm/v7")
