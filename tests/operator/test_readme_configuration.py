"""The README's configuration block is a configuration archwarden loads, naming every key a
file may hold at its top: it cannot drift from the loader unnoticed."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from archwarden import settings

README = Path(__file__).resolve().parents[2] / "README.md"


def configuration_block() -> str:
    text = README.read_text()
    section = text[text.index("\n## Configuration\n") :]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert match is not None, "no yaml block under ## Configuration"
    return match.group(1)


def test_the_readme_block_loads_and_names_every_top_level_key() -> None:
    data = yaml.safe_load(configuration_block())
    assert set(data) == settings.TOP_LEVEL_KEYS
    loaded = settings.from_mapping(data)
    assert loaded.audit.period_seconds == 3600
    assert loaded.skip.allowed == "labelledNamespaces"
