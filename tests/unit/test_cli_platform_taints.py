"""``check`` and ``report`` take ``platforms.taints`` from their flags."""

from __future__ import annotations

import pytest

from archwarden import cli, policy


def _taints(*flags: str) -> tuple[policy.PlatformTaint, ...]:
    for command in ("check", "report"):
        required = ["-f", "x.yaml", "--platforms", "linux/amd64"] if command == "check" else []
        args = cli._parser().parse_args([command, *required, *flags])
        taints = cli._offline_settings(args).platforms.taints
        if command == "check":
            found = taints
        else:
            assert taints == found
    return found


def test_default_is_the_arch_key_with_both_scheduling_effects() -> None:
    assert _taints() == policy.DEFAULT_PLATFORM_TAINTS


def test_flags_name_keys_and_effects_or_none() -> None:
    assert _taints("--platform-taint", "example.com/arch:NoExecute", "--platform-taint", "k") == (
        policy.PlatformTaint("example.com/arch", frozenset({"NoExecute"})),
        policy.PlatformTaint("k", frozenset({"NoSchedule", "PreferNoSchedule"})),
    )
    assert _taints("--no-platform-taints") == ()


def test_a_bad_effect_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli._parser().parse_args(["report", "--platform-taint", "k:Sometimes"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "archwarden report: error: argument --platform-taint: --platform-taint.effects: "
        "expected NoSchedule, PreferNoSchedule, NoExecute, got 'Sometimes'"
    )
