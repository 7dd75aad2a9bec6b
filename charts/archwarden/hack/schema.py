#!/usr/bin/env python3
"""Generate values.schema.json from the comments in values.yaml.

    python3 charts/archwarden/hack/schema.py           rewrite values.schema.json
    python3 charts/archwarden/hack/schema.py --check   exit 1 (with a diff) when it is stale

values.yaml is the single source. Comments follow helm-docs' convention, so that helm-docs writes
the README's values table from the same text (``make chart-docs``): a value's description starts
at a ``# -- `` line and runs to the key. Lines starting with ``+`` before it are directives for
this generator (see the header of values.yaml). A group of values has a plain comment (helm-docs
would otherwise list the whole group as one value). Every value must carry a description, so an
undocumented value fails the generator, and therefore CI. helm-docs has no schema output, hence
this script.

Objects whose keys appear in values.yaml get ``additionalProperties: false``: a misspelt value
(``--set replicaCont=3``) is rejected by ``helm`` instead of being silently ignored. ``+free``
objects (Kubernetes structures, user-keyed maps) accept anything their ``+schema`` allows.

Only PyYAML is needed (for the defaults); the comments are read line by line, which is enough
for the block-style YAML this file is written in (a flow-style mapping with keys would be
caught: the key sets read both ways must agree).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1]
VALUES = CHART / "values.yaml"
SCHEMA = CHART / "values.schema.json"

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.\-/]+):(?:\s|$)")
_COMMENT = re.compile(r"^(?P<indent> *)#(?: (?P<text>.*)|(?P<empty>))$")
_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}
_DNS_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
# Named checks (``+format: NAME`` or ``"format": "NAME"`` inside ``+schema``), expanded to a
# pattern because helm's JSON-schema validator treats unknown formats as annotations only.
FORMATS: dict[str, dict[str, Any]] = {
    # resource.Quantity (k8s.io/apimachinery): a decimal with an SI, binary or exponent suffix.
    "quantity": {
        "pattern": r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)"
        r"(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]+))?$"
    },
    # Go time.ParseDuration, as cert-manager reads Certificate durations.
    "duration": {"pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"},
    # Prometheus durations (ServiceMonitor intervals, alert `for`): units y w d h m s ms.
    "prometheus-duration": {
        "pattern": r"^(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?"
        r"(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?$",
        "minLength": 2,
    },
    "dns1123-label": {"pattern": f"^{_DNS_LABEL}$", "maxLength": 63},
    "dns1123-subdomain": {"pattern": rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$", "maxLength": 253},
    # Standard base64 with padding (PEM bundles as the API server's caBundle fields take them).
    "base64": {"pattern": r"^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"},
    # A label or annotation key: optional DNS subdomain prefix, then a name of at most 63.
    "label-key": {
        "pattern": rf"^({_DNS_LABEL}(\.{_DNS_LABEL})*/)?"
        r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$",
        "maxLength": 317,
    },
    "label-value": {
        "pattern": r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$",
    },
}


class ValuesError(Exception):
    """values.yaml cannot be turned into a schema; the message names the line or key."""


@dataclasses.dataclass
class Entry:
    path: tuple[str, ...]
    line: int
    description: list[str] = dataclasses.field(default_factory=list)
    directives: dict[str, str] = dataclasses.field(default_factory=dict)
    has_children: bool = False
    helm_docs: bool = False
    """The description is marked ``# --``: helm-docs lists this key as one row."""

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def _read_comment(lines: list[str], entry: Entry, number: int) -> bool:
    """Fill ``entry``'s directives and description; whether it has a ``# --`` description."""
    marked = False
    for text_line in lines:
        if text_line.startswith("+"):
            if marked:
                raise ValuesError(
                    f"values.yaml:{number}: directive {text_line!r} after the `# --` description "
                    "(helm-docs would print it): put directives first"
                )
            name, _, value = text_line[1:].partition(":")
            entry.directives[name.strip()] = value.strip()
        elif text_line == "--" or text_line.startswith("-- "):
            if marked:
                raise ValuesError(f"values.yaml:{number}: two `# --` lines above one key")
            if " --" in text_line[2:]:
                # helm-docs' pattern `# <key> -- <text>` would take the text before it for a key.
                raise ValuesError(
                    f"values.yaml:{number}: the `# --` line must not contain ' --' "
                    "(helm-docs would misread it): move that part to the next line"
                )
            marked = True
            entry.description = [text_line[3:]]
        elif text_line.startswith("--"):
            raise ValuesError(
                f"values.yaml:{number}: a comment line starting with `--` starts a new helm-docs "
                "description: reflow it"
            )
        else:
            entry.description.append(text_line)
    return marked


def read_entries(text: str) -> list[Entry]:
    """Keys of values.yaml in file order, each with the comment block right above it."""
    entries: list[Entry] = []
    stack: list[tuple[int, Entry]] = []  # (indent, entry) of the enclosing keys
    comments: list[str] = []
    skip_deeper_than: int | None = None  # inside a +free value, or a list's items
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if skip_deeper_than is not None:
            if stripped and indent <= skip_deeper_than and not stripped.startswith("- "):
                skip_deeper_than = None
            else:
                continue
        if not stripped:
            comments = []
            continue
        if stripped == "-" or stripped.startswith("- "):
            # A list's items belong to the key above; they are its default, not values.
            skip_deeper_than = stack[-1][0] if stack else 0
            continue
        comment = _COMMENT.match(line)
        if comment:
            comments.append(comment.group("text") or "")
            continue
        match = _KEY.match(line)
        if not match:
            raise ValuesError(f"values.yaml:{number}: cannot read {stripped!r}")
        indent = len(match.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else None
        if parent is not None:
            parent.has_children = True
        entry = Entry(path=(*(parent.path if parent else ()), match.group("key")), line=number)
        entry.helm_docs = _read_comment(comments, entry, number)
        comments = []
        entries.append(entry)
        stack.append((indent, entry))
        if "free" in entry.directives:
            skip_deeper_than = indent
    return entries


def _lookup(values: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        values = values[key]
    return values


def _leaf_paths(values: Any, prefix: tuple[str, ...], free: set[tuple[str, ...]]) -> set[tuple]:
    paths: set[tuple[str, ...]] = set()
    for key, value in values.items():
        path = (*prefix, key)
        paths.add(path)
        if isinstance(value, dict) and value and path not in free:
            paths |= _leaf_paths(value, path, free)
    return paths


def _leaf_schema(entry: Entry, default: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {}
    declared = entry.directives.get("type")
    if declared:
        types = declared.split("|")
        schema["type"] = types[0] if len(types) == 1 else types
    elif default is None:
        raise ValuesError(f"{entry.dotted}: a null default needs a `+type:` directive")
    elif isinstance(default, dict):
        schema["type"] = "object"
    else:
        schema["type"] = _JSON_TYPES[type(default)]
    if "enum" in entry.directives:
        schema["enum"] = [item.strip() for item in entry.directives["enum"].split(",")]
    for name in ("minimum", "maximum"):
        if name in entry.directives:
            number = float(entry.directives[name])
            schema[name] = int(number) if number.is_integer() else number
    if "pattern" in entry.directives:
        schema["pattern"] = entry.directives["pattern"]
    if "format" in entry.directives:
        schema["format"] = entry.directives["format"]
    if "schema" in entry.directives:
        try:
            schema.update(json.loads(entry.directives["schema"]))
        except json.JSONDecodeError as exc:
            raise ValuesError(f"{entry.dotted}: +schema is not JSON: {exc}") from None
    return _expand_formats(schema, entry, optional=default == "")


def _expand_formats(node: Any, entry: Entry, *, optional: bool) -> Any:
    """Replace every ``"format": NAME`` by its pattern; an empty default ("unset") stays valid."""
    if isinstance(node, list):
        return [_expand_formats(item, entry, optional=False) for item in node]
    if not isinstance(node, dict):
        return node
    expanded = {key: _expand_formats(value, entry, optional=False) for key, value in node.items()}
    name = expanded.pop("format", None)
    if name is None:
        return expanded
    if not isinstance(name, str) or name not in FORMATS:
        raise ValuesError(f"{entry.dotted}: unknown format {name!r} (known: {sorted(FORMATS)})")
    checks = dict(FORMATS[name])
    if optional:
        checks["pattern"] = f"^$|{checks['pattern']}"
        checks.pop("minLength", None)
    return {**expanded, **checks}


def build(text: str) -> tuple[dict[str, Any], list[tuple[Entry, Any]]]:
    """The JSON schema and the documented values (entry, default) in file order."""
    values = yaml.safe_load(text) or {}
    entries = read_entries(text)
    free = {entry.path for entry in entries if "free" in entry.directives}
    documented = {entry.path for entry in entries}
    parsed = _leaf_paths(values, (), free)
    if documented != parsed:
        missing = sorted(".".join(p) for p in parsed - documented)
        extra = sorted(".".join(p) for p in documented - parsed)
        raise ValuesError(f"values.yaml read two ways disagrees: only YAML {missing}, only {extra}")

    root: dict[str, Any] = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "archwarden chart values",
        "description": "Generated from the comments in values.yaml by hack/schema.py.",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            # Helm passes `global` to every chart, whether or not it has subcharts.
            "global": {"type": "object", "description": "Helm's values shared with subcharts."},
        },
    }
    nodes: dict[tuple[str, ...], dict[str, Any]] = {(): root}
    table: list[tuple[Entry, Any]] = []
    for entry in entries:
        default = _lookup(values, entry.path)
        group = entry.has_children and "free" not in entry.directives
        if group and entry.helm_docs:
            raise ValuesError(
                f"values.yaml:{entry.line}: {entry.dotted} groups values: a plain comment, not "
                "`# --` (helm-docs would list the whole group as one value)"
            )
        if not group and entry.description and not entry.helm_docs:
            raise ValuesError(
                f"values.yaml:{entry.line}: {entry.dotted}: the description must start with `# --`"
            )
        if group:
            node: dict[str, Any] = {"type": "object", "additionalProperties": False}
            if entry.description:
                node["description"] = " ".join(entry.description)
            node["properties"] = {}
        else:
            if not entry.description:
                raise ValuesError(f"values.yaml:{entry.line}: {entry.dotted} has no description")
            node = {"description": " ".join(entry.description), **_leaf_schema(entry, default)}
            node["default"] = default
            table.append((entry, default))
        nodes[entry.path] = node
        nodes[entry.path[:-1]]["properties"][entry.path[-1]] = node
    return root, table


def render(values_text: str) -> str:
    """New contents of values.schema.json."""
    schema, _ = build(values_text)
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when a file is out of date")
    args = parser.parse_args(argv)
    try:
        outputs = {SCHEMA: render(VALUES.read_text())}
    except ValuesError as exc:
        print(f"schema.py: {exc}", file=sys.stderr)
        return 1
    stale = False
    for path, text in outputs.items():
        current = path.read_text() if path.exists() else ""
        if current == text:
            continue
        if args.check:
            stale = True
            sys.stderr.writelines(
                difflib.unified_diff(
                    current.splitlines(keepends=True),
                    text.splitlines(keepends=True),
                    f"{path.name} (committed)",
                    f"{path.name} (generated)",
                )
            )
        else:
            path.write_text(text)
            print(f"schema.py: wrote {path.relative_to(CHART)}")
    if stale:
        print(
            "schema.py: out of date; run python3 charts/archwarden/hack/schema.py", file=sys.stderr
        )
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
