"""containerd's own platform tables, ported: parsing, normalisation, the ``Only`` matcher, its
fallback order and the Windows build rule.

Cases written from the tables of github.com/containerd/platforms v1.0.0-rc.4 (commit 09756f5):
platforms_test.go (TestParseSelector), compare_test.go (TestOnly), platform_windows_compat.go
and platform_windows_compat_test.go (Test_PlatformCompat), platforms_windows_test.go
(TestFallbackOnOSVersion). containerd's matcher runs every fallback; archwarden's default
(arm64RunsArm32 off) is checked separately at the end.
"""

from __future__ import annotations

import pytest

from archwarden import platforms
from archwarden.platforms import InvalidPlatform, Platform, normalize

ALL = platforms.ALL_FALLBACKS

# -- Parse (platforms_test.go TestParseSelector) ---------------------------------------------

PARSE = [
    ("linux/arm64", Platform("linux", "arm64")),
    ("linux/arm64/v8", Platform("linux", "arm64")),
    ("linux/arm", Platform("linux", "arm", "v7")),
    ("linux/arm/v6", Platform("linux", "arm", "v6")),
    ("linux/arm/v7", Platform("linux", "arm", "v7")),
    ("arm", Platform("linux", "arm", "v7")),
    ("armel", Platform("linux", "arm", "v6")),
    ("armhf", Platform("linux", "arm", "v7")),
    ("Aarch64", Platform("linux", "arm64")),
    ("x86_64", Platform("linux", "amd64")),
    ("Linux/x86_64", Platform("linux", "amd64")),
    ("i386", Platform("linux", "386")),
    ("s390x", Platform("linux", "s390x")),
    ("linux/s390x", Platform("linux", "s390x")),
    ("windows(10.0.17763)/amd64", Platform("windows", "amd64", "", "10.0.17763")),
    ("windows()/amd64", Platform("windows", "amd64")),
    (
        "windows(10.0.17763+win32k)/amd64",
        Platform("windows", "amd64", "", "10.0.17763", ("win32k",)),
    ),
    ("linux(+unsorted+erofs)/amd64", Platform("linux", "amd64", "", "", ("erofs", "unsorted"))),
    (
        "windows(10.0.17763%2Bbuild.42)/amd64",
        Platform("windows", "amd64", "", "10.0.17763+build.42"),
    ),
    ("windows(50%25done)/amd64", Platform("windows", "amd64", "", "50%done")),
]


@pytest.mark.parametrize(("spec", "expected"), PARSE)
def test_parse_as_containerd(spec: str, expected: Platform) -> None:
    assert platforms.parse(spec) == expected


REFUSED = [
    # containerd refuses these too (wildcards, components outside its character sets, more
    # than three parts, an unknown one-word specifier).
    ("*", "wildcards"),
    ("linux/*", "wildcards"),
    ("linux /arm", "'linux ' is not an os"),
    ("linux/&arm", "'&arm' is not an architecture or variant"),
    ("linux/arm/v7/x", "too many components"),
    ("nonsense", "unknown os or architecture"),
    ("windows(10.0%zz)/amd64", "bad escape"),
    # containerd gives these the parsing machine's architecture; archwarden has no such
    # machine, so an os alone is refused rather than read as linux/linux.
    ("linux", "an os without an architecture"),
    ("macOS", "an os without an architecture"),
    ("windows(10.0.17763)", "an os without an architecture"),
]


@pytest.mark.parametrize(("spec", "reason"), REFUSED)
def test_parse_refuses_as_containerd(spec: str, reason: str) -> None:
    with pytest.raises(InvalidPlatform) as caught:
        platforms.parse(spec)
    message = str(caught.value)
    assert "\n" not in message
    assert repr(spec) in message and reason in message


# -- Only (compare_test.go TestOnly): node -> images that match / do not ----------------------

ONLY = {
    "linux/amd64": (
        ["linux/amd64", "linux/386"],
        ["linux/amd64/v2", "linux/arm/v7", "linux/arm64", "windows/amd64", "windows/arm"],
    ),
    "linux/amd64/v2": (
        ["linux/amd64", "linux/amd64/v1", "linux/amd64/v2", "linux/386"],
        ["linux/amd64/v3", "linux/amd64/v4", "linux/arm/v7", "linux/arm64", "windows/amd64"],
    ),
    "linux/386": (["linux/386"], ["linux/amd64", "linux/arm/v7", "linux/arm64", "windows/amd64"]),
    "windows/amd64": (
        ["windows/amd64", "windows(10.0.17763)/amd64"],
        ["linux/amd64", "linux/arm/v7", "linux/arm64", "windows/arm"],
    ),
    "linux/arm/v8": (
        ["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8"],
        ["linux/amd64", "linux/arm/v4", "linux/arm64", "windows/amd64", "windows/arm"],
    ),
    "linux/arm/v7": (
        ["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7"],
        ["linux/amd64", "linux/arm/v4", "linux/arm/v8", "linux/arm64", "windows/arm"],
    ),
    "linux/arm/v6": (
        ["linux/arm/v5", "linux/arm/v6"],
        ["linux/amd64", "linux/arm", "linux/arm/v4", "linux/arm/v7", "linux/arm/v8"],
    ),
    "linux/arm/v5": (
        ["linux/arm/v5"],
        ["linux/arm", "linux/arm/v4", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8"],
    ),
    "linux/arm/v4": (
        ["linux/arm/v4"],
        ["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8"],
    ),
    "linux/arm64/v9.6": (
        [
            "linux/arm",
            *(f"linux/arm/v{n}" for n in range(5, 9)),
            "linux/arm64",
            "linux/arm64/v8",
            *(f"linux/arm64/v8.{n}" for n in range(1, 10)),
            "linux/arm64/v9",
            *(f"linux/arm64/v9.{n}" for n in range(7)),
        ],
        ["linux/amd64", "linux/arm/v4", "windows/amd64", "linux/arm64/v8.10"],
    ),
    "linux/arm64/v9": (
        [
            "linux/arm",
            *(f"linux/arm/v{n}" for n in range(5, 9)),
            "linux/arm64",
            "linux/arm64/v8",
            *(f"linux/arm64/v8.{n}" for n in range(1, 6)),
            "linux/arm64/v9",
            "linux/arm64/v9.0",
        ],
        ["linux/amd64", "linux/arm/v4", "windows/amd64", "linux/arm64/v8.6"],
    ),
    "linux/arm64/v8.1": (
        [
            "linux/arm",
            *(f"linux/arm/v{n}" for n in range(5, 9)),
            "linux/arm64",
            "linux/arm64/v8",
            "linux/arm64/v8.1",
        ],
        ["linux/amd64", "linux/arm/v4", "linux/arm/v9", "linux/arm64/v9", "windows/amd64"],
    ),
    "linux/arm64": (
        [
            "linux/arm",
            *(f"linux/arm/v{n}" for n in range(5, 9)),
            "linux/arm64",
            "linux/arm64/v8",
        ],
        ["linux/amd64", "linux/arm/v4", "linux/arm/v9", "linux/arm64/v9", "windows/amd64"],
    ),
}
ONLY_CASES = [
    (node, image, expected)
    for node, (yes, no) in ONLY.items()
    for expected, images in ((True, yes), (False, no))
    for image in images
]


@pytest.mark.parametrize(("node", "image", "expected"), ONLY_CASES)
def test_only_matches_as_containerd(node: str, image: str, expected: bool) -> None:
    assert platforms.node_can_run(platforms.parse(node), platforms.parse(image), ALL) is expected


# -- The fallback order (compare.go platformVector) ------------------------------------------

ORDER = [
    ("linux/amd64", ["linux/amd64", "linux/386"]),
    ("linux/amd64/v3", ["linux/amd64/v3", "linux/amd64/v2", "linux/amd64", "linux/386"]),
    ("linux/arm/v7", ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]),
    ("linux/arm/v5", ["linux/arm/v5"]),
    ("linux/arm/v4", ["linux/arm/v4"]),
    (
        "linux/arm64",
        ["linux/arm64", "linux/arm/v8", "linux/arm/v7", "linux/arm/v6", "linux/arm/v5"],
    ),
    (
        "linux/arm64/v9.1",
        [
            *("linux/arm64/v9.1", "linux/arm64/v9"),
            *(f"linux/arm64/v8.{n}" for n in range(6, 0, -1)),
            "linux/arm64",
            *(f"linux/arm/v{n}" for n in range(8, 4, -1)),
        ],
    ),
    # Not in containerd's table: no other arm64 variant is, so it matches nothing at all.
    ("linux/arm64/v8.10", []),
    ("linux/arm64/v10", []),
    ("linux/s390x", ["linux/s390x"]),
]


@pytest.mark.parametrize(("node", "expected"), ORDER)
def test_fallback_order_is_containerds(node: str, expected: list[str]) -> None:
    found = platforms.candidates(platforms.parse(node), ALL)
    assert [p.canonical for p in found] == [platforms.parse(e).canonical for e in expected]


def test_archwarden_default_drops_arm32_from_the_order() -> None:
    # Deliberate: AArch32 is optional on ARMv8 and absent from Graviton4, Axion, Cobalt and
    # AmpereOne, so arm64 nodes run no arm/* unless platforms.arm64RunsArm32 or a node label
    # says so; containerd would pull them and the pod would crash with exec format error.
    found = platforms.candidates(platforms.parse("linux/arm64"), platforms.DEFAULT_FALLBACKS)
    assert [p.canonical for p in found] == ["linux/arm64"]


# -- Windows builds (platform_windows_compat_test.go Test_PlatformCompat and beyond) ---------

LTSC2019, LTSC2022, V22H2_WIN11, V23H2, LTSC2025 = 17763, 20348, 22621, 25398, 26100
WINDOWS = [
    # host build, image build, runs?
    (LTSC2019, LTSC2019, True),
    (LTSC2019, LTSC2022, False),
    (LTSC2022, LTSC2019, False),
    (LTSC2022, LTSC2022, True),
    (V22H2_WIN11, LTSC2019, False),
    (V22H2_WIN11, LTSC2022, True),
    (V23H2, LTSC2019, False),
    (V23H2, LTSC2022, True),
    (LTSC2025, LTSC2022, True),
    (LTSC2022, LTSC2025, False),
    (LTSC2022, V22H2_WIN11, False),
    (LTSC2025, V22H2_WIN11, True),
    # From checkWindowsHostAndContainerCompat itself: a host newer than 26100 runs builds
    # from 26100 (the latest LTSC older than it) up to its own, no longer 20348 images.
    (26200, LTSC2025, True),
    (26200, 26200, True),
    (26200, LTSC2022, False),
    (26200, V23H2, False),
    (26200, 26201, False),
    (LTSC2022 + 1, LTSC2022, True),
    (LTSC2019 - 1, LTSC2019 - 1, True),
    (LTSC2019 - 1, LTSC2019, False),
]


@pytest.mark.parametrize(("host", "image", "expected"), WINDOWS)
def test_windows_builds_as_containerd(host: int, image: int, expected: bool) -> None:
    node = normalize("windows", "amd64", os_version=f"10.0.{host}")
    found = normalize("windows", "amd64", os_version=f"10.0.{image}.1")
    assert platforms.node_can_run(node, found) is expected


WINDOWS_VERSIONS = [
    # host os.version, image os.version, runs? (getWindowsOSVersion and the matcher)
    ("99.99.99.99", "", True),  # TestFallbackOnOSVersion: no image version matches
    ("", "10.0.17763.1", True),  # no host version: matches anything
    ("10.0", "10.0.17763.1", True),  # unparseable host version: the same
    ("10.0.20348", "garbage", False),  # an unparseable image version is 0.0.0
    ("10.0.20348", "10.0.99999.1", False),  # a build past uint16 is unparseable
    ("10.0.20348", "6.3.20348.1", False),  # major.minor must match
]


@pytest.mark.parametrize(("host", "image", "expected"), WINDOWS_VERSIONS)
def test_windows_versions_as_containerd(host: str, image: str, expected: bool) -> None:
    node = normalize("windows", "amd64", os_version=host)
    assert platforms.node_can_run(node, normalize("windows", "amd64", os_version=image)) is expected


def test_windows_ignores_win32k_as_containerd() -> None:
    # platforms.go windowsStripFeaturesMatcher: win32k is dropped before matching; any other
    # feature must be on the node.
    node = normalize("windows", "amd64", os_version="10.0.20348")
    assert platforms.node_can_run(
        node, normalize("windows", "amd64", "", "10.0.20348.1", ["win32k"])
    )
    assert not platforms.node_can_run(node, normalize("windows", "amd64", "", "", ["gpu"]))
