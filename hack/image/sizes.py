#!/usr/bin/env python3
"""Per-platform sizes of a pushed multi-platform image, read from its registry.

    hack/image/sizes.py [--insecure] [--json] REGISTRY/REPO:TAG

For each platform of the OCI index: the compressed size (the layers' sizes as pushed, what a
node downloads) and the uncompressed size (the layers' tar streams after gunzip, what a node
unpacks). Only anonymous registries: the local registry the image test and docs/image.md use.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
import zlib
from typing import Any

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ACCEPT = ",".join(
    [
        INDEX,
        MANIFEST,
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
CHUNK = 1 << 20


def _open(url: str, accept: str | None = None) -> Any:
    # Only http(s) URLs reach here: sizes() builds every one from the registry's host name.
    headers = {"Accept": accept} if accept else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310
    return urllib.request.urlopen(request, timeout=60)  # noqa: S310


def _json(url: str) -> Any:
    with _open(url, ACCEPT) as response:
        return json.load(response)


def _unpacked(url: str) -> int:
    inflate = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)  # gzip
    total = 0
    with _open(url) as response:
        while chunk := response.read(CHUNK):
            total += len(inflate.decompress(chunk))
    return total + len(inflate.flush())


def sizes(reference: str, insecure: bool) -> list[dict[str, Any]]:
    registry, _, rest = reference.partition("/")
    repository, _, tag = rest.rpartition(":")
    base = f"{'http' if insecure else 'https'}://{registry}/v2/{repository}"
    index = _json(f"{base}/manifests/{tag}")
    rows = []
    for entry in index.get("manifests", []):
        platform = entry["platform"]
        name = "/".join(
            part
            for part in (platform["os"], platform["architecture"], platform.get("variant"))
            if part
        )
        manifest = _json(f"{base}/manifests/{entry['digest']}")
        layers = manifest["layers"]
        rows.append(
            {
                "platform": name,
                "layers": len(layers),
                "compressed": sum(layer["size"] for layer in layers),
                "uncompressed": sum(
                    _unpacked(f"{base}/blobs/{layer['digest']}") for layer in layers
                ),
            }
        )
    return sorted(rows, key=lambda row: row["platform"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("reference", metavar="REGISTRY/REPO:TAG")
    parser.add_argument("--insecure", action="store_true", help="plain HTTP")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    args = parser.parse_args()
    rows = sizes(args.reference, args.insecure)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'platform':<16} {'layers':>6} {'compressed':>12} {'uncompressed':>13}")
    for row in rows:
        print(
            f"{row['platform']:<16} {row['layers']:>6} {row['compressed'] / 1e6:>9.1f} MB"
            f" {row['uncompressed'] / 1e6:>10.1f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
