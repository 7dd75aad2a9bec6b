"""The ``archwarden`` command line.

Expected failures (bad references, registry errors, unreadable files) print one line on stderr
and set the exit status; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from archwarden import __version__, reference, registry

__all__ = ["main"]


def _registry_settings(args: argparse.Namespace) -> registry.ClientSettings:
    per_host: dict[str, dict[str, Any]] = {}
    for host in args.insecure_registry:
        per_host.setdefault(host, {})["insecure"] = True
    for item in args.mirror:
        upstream, sep, mirror = item.partition("=")
        if not sep or not upstream or not mirror:
            raise SystemExit(f"archwarden: error: --mirror wants REGISTRY=MIRROR, got {item!r}")
        entry = per_host.setdefault(upstream, {})
        entry["mirrors"] = (*entry.get("mirrors", ()), mirror)
    return registry.ClientSettings(
        registries={host: registry.RegistrySettings(**values) for host, values in per_host.items()},
        ca_file=args.ca_file,
        timeout=args.timeout,
    )


def _table(rows: list[dict[str, Any]]) -> str:
    header = ("IMAGE", "DIGEST", "PLATFORMS")
    lines = [header]
    for row in rows:
        if "error" in row:
            lines.append((row["image"], "-", "error: see stderr"))
        else:
            lines.append((row["image"], row["digest"], ", ".join(row["platforms"])))
    widths = [max(len(line[i]) for line in lines) for i in range(2)]
    return "\n".join(
        f"{line[0]:<{widths[0]}}  {line[1]:<{widths[1]}}  {line[2]}".rstrip() for line in lines
    )


async def _inspect(args: argparse.Namespace) -> int:
    settings = _registry_settings(args)
    try:
        credentials = registry.CredentialStore.from_files(args.docker_config)
    except registry.InvalidDockerConfig as error:
        print(f"archwarden: error: {error}", file=sys.stderr)
        return 1
    async with registry.RegistryClient(settings, credentials) as client:
        resolver = registry.Resolver(client)

        async def one(text: str) -> dict[str, Any]:
            try:
                return (await resolver.resolve(reference.parse(text))).to_json()
            except (reference.InvalidReference, registry.RegistryError) as error:
                return {"image": text, "error": str(error)}

        rows = await asyncio.gather(*(one(text) for text in args.images))
    for row in rows:
        if "error" in row:
            print(f"archwarden: error: {row['error']}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(_table(rows))
    return 1 if any("error" in row for row in rows) else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="archwarden",
        description="Keep workloads on nodes whose architecture their images support.",
    )
    parser.add_argument("--version", action="version", version=f"archwarden {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser(
        "inspect", help="print the platforms each image supports, as the registry reports them"
    )
    inspect.add_argument("images", nargs="+", metavar="REF", help="image references")
    inspect.add_argument("--json", action="store_true", help="print a JSON list")
    inspect.add_argument(
        "--docker-config",
        action="append",
        default=[],
        metavar="FILE",
        help="docker config.json / dockerconfigjson with pull credentials (repeatable)",
    )
    inspect.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="talk plain HTTP to this registry (repeatable)",
    )
    inspect.add_argument("--ca-file", metavar="FILE", help="PEM bundle to trust for registry TLS")
    inspect.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="REGISTRY=MIRROR",
        help="try MIRROR before REGISTRY (repeatable)",
    )
    inspect.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per registry request (default 10)"
    )
    inspect.set_defaults(handler=_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(asyncio.run(args.handler(args)))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
