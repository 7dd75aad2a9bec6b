"""The demo: real registry, sample images, archwarden's answers. Run by `make demo`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.images import Seeder  # noqa: E402
from tests.support.registry import start_registry  # noqa: E402

SAMPLES = {
    "demo/web:1.0": ["linux/amd64", "linux/arm64", "linux/arm/v7"],
    "demo/legacy:2.3": ["linux/amd64"],
    "demo/edge:0.9": ["linux/arm64"],
    "demo/mainframe:5": ["linux/s390x", "linux/ppc64le"],
    "demo/win:ltsc2022": ["windows/amd64:10.0.20348.1129"],
}


def banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def main() -> int:
    workdir = ROOT / ".demo"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    banner("starting a local registry (Debian's distribution 2.8) on 127.0.0.1")
    server = start_registry(workdir / "registry", "plain")
    try:
        print(f"registry at {server.url}")
        banner("seeding sample images over the registry HTTP API")
        with Seeder(server) as seeder:
            for ref, platforms in SAMPLES.items():
                repo, tag = ref.split(":")
                if len(platforms) == 1:
                    fmt = "docker" if platforms[0].startswith("windows") else "oci"
                    seeder.push_image(repo, tag, platforms[0], fmt=fmt)
                else:
                    seeder.push_multiarch(repo, tag, platforms, attestations=True)
                print(f"  {server.host}/{ref:<20} built for {', '.join(platforms)}")
        refs = [f"{server.host}/{ref}" for ref in SAMPLES]
        archwarden = str(ROOT / ".venv" / "bin" / "archwarden")
        banner("archwarden inspect (what the webhook sees for each image)")
        cmd = [archwarden, "inspect", "--insecure-registry", server.host, *refs]
        print("$ " + " ".join(cmd[:4]) + " ...", flush=True)
        subprocess.run(cmd, check=True)
        banner("a missing tag and a metadata address: one line each, exit 1")
        bad = [f"{server.host}/demo/web:9.9", "169.254.169.254/latest/meta-data"]
        result = subprocess.run([*cmd[:4], *bad], check=False)
        print(f"exit status {result.returncode}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
