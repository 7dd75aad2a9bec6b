"""Event reasons have one home (archwarden.reasons): the README lists exactly those, with their
types, and no module posts an Event with a reason spelt out in place."""

from __future__ import annotations

import re
from pathlib import Path

from archwarden import reasons

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_lists_every_reason_with_its_type() -> None:
    text = ROOT.joinpath("README.md").read_text()
    start = text.index("Events (stable reasons")
    listed = text[start : text.index("Pods created by controllers", start)]
    found = re.findall(r"`([A-Za-z]+)`\s+\((Normal|Warning)\)", listed)
    assert found == [(r.reason, r.type) for r in reasons.ALL]


def test_no_module_spells_a_reason_out() -> None:
    names = {r.reason for r in reasons.ALL}
    spelt = []
    for path in sorted(ROOT.joinpath("operator/archwarden").rglob("*.py")):
        if path.name == "reasons.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for name in re.findall(r'"([A-Za-z]+)"', line):
                if name in names:
                    spelt.append(f"{path.relative_to(ROOT)}:{number}: {name}")
    assert spelt == []
