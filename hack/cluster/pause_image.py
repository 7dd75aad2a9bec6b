"""Push the real node's sandbox ("pause") image to the cluster registry.

    python3 pause_image.py <registry host:port> <repository:tag> <path to catatonit>

No image can come from outside this machine, so the sandbox image is made here: one layer
holding Debian's static ``catatonit`` (an init that, with ``-P``, only waits as a pause process
does), an OCI config for this machine's architecture, and an OCI manifest, pushed over the
registry HTTP API (plain HTTP, standard library only: up.sh runs before any virtualenv exists).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import platform
import sys
import tarfile
import urllib.parse
import urllib.request

# Every URL here is http://<registry>/v2/... built from the command line (S310 is about
# file: and custom schemes reaching urlopen).
# ruff: noqa: S310

# Go's architecture names, which image configs use.
ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x"}


def layer(binary: str) -> tuple[bytes, bytes]:
    """The layer (gzip) and its uncompressed tar; fixed mtimes make the digest reproducible."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tar.gettarinfo(binary, arcname="catatonit")
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        info.mode = 0o755
        with open(binary, "rb") as data:
            tar.addfile(info, data)
    plain = raw.getvalue()
    return gzip.compress(plain, mtime=0), plain


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(opener: urllib.request.OpenerDirector, base: str, repo: str, data: bytes) -> None:
    start = urllib.request.Request(f"{base}/v2/{repo}/blobs/uploads/", method="POST")
    with opener.open(start, timeout=10) as answer:
        location = urllib.parse.urljoin(base, answer.headers["Location"])
    separator = "&" if "?" in location else "?"
    put = urllib.request.Request(
        f"{location}{separator}digest={digest(data)}",
        data=data,
        method="PUT",
        headers={"Content-Type": "application/octet-stream"},
    )
    opener.open(put, timeout=30).close()


def main() -> int:
    registry, reference, binary = sys.argv[1:4]
    repo, _, tag = reference.partition(":")
    base = f"http://{registry}"
    # Never through a proxy: the registry is on this machine.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    compressed, plain = layer(binary)
    config = json.dumps(
        {
            "architecture": ARCHITECTURES.get(platform.machine(), platform.machine()),
            "os": "linux",
            "config": {"Entrypoint": ["/catatonit", "-P"]},
            "rootfs": {"type": "layers", "diff_ids": [digest(plain)]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest(compressed),
                    "size": len(compressed),
                }
            ],
        }
    ).encode()
    push_blob(opener, base, repo, compressed)
    push_blob(opener, base, repo, config)
    put = urllib.request.Request(
        f"{base}/v2/{repo}/manifests/{tag}",
        data=manifest,
        method="PUT",
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    opener.open(put, timeout=10).close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
