#!/usr/bin/env bash
# Installs the Debian packages the image build and its test use, when they are missing: buildah
# (builds and pushes without a daemon), mmdebstrap (the Debian base images), podman (runs the
# built image in tests/image). CI starts on fresh machines, so nothing may be assumed installed.
set -euo pipefail

missing=()
for tool in buildah:buildah mmdebstrap:mmdebstrap podman:podman; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
# mmdebstrap verifies Debian's Release files with this keyring.
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]} (Debian)" >&2
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
