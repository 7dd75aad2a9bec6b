"""Text outputs escape control characters (issue 18, item 8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from archwarden import cli
from archwarden.printable import printable


def test_control_characters_are_escaped_and_the_rest_kept() -> None:
    assert printable("a\x1b[31mb\nc\td\x7f\x9be é ü") == "a\\x1b[31mb\\x0ac\\x09d\\x7f\\x9be é ü"


def test_check_prints_a_hostile_manifest_as_one_escaped_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(
        'apiVersion: v1\nkind: Pod\nmetadata:\n  name: "web\\e[31mFORGED\\nDENY  row"\n'
        'spec:\n  containers:\n  - name: c\n    image: "127.0.0.1:9/x:1"\n'
    )
    code = cli.main(["check", "--platforms", "linux/amd64", "-f", str(manifest), "--timeout", "2"])
    out = capsys.readouterr().out
    assert code == 1
    assert "\x1b" not in out
    assert out.count("\n") == 1  # one workload, one line: no forged row
    assert out.startswith("DENY  Pod/web\\x1b[31mFORGED\\x0aDENY  row: ")
