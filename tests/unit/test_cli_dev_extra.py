"""`run --dev` without the optional cryptography package ([dev] extra): one clear line, exit 2.

The container image has no cryptography (no s390x wheel on PyPI); tests/image checks the same
line from the real image.
"""

from __future__ import annotations

import sys

import pytest

from archwarden import cli


def test_run_dev_without_cryptography_fails_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # None in sys.modules makes `import cryptography` raise ImportError, as if not installed.
    for name in [m for m in sys.modules if m == "cryptography" or m.startswith("cryptography.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cryptography", None)
    assert cli.main(["run", "--dev"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "archwarden: error: run --dev needs the cryptography package: "
        "pip install 'archwarden[dev]'\n"
    )


def test_run_dev_with_cryptography_gets_past_the_check() -> None:
    # The check itself passes here (the test extras include cryptography).
    assert cli._missing_dev_extra() is None
