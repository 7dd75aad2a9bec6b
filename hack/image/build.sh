#!/usr/bin/env bash
# Builds archwarden's container image (the repository's Dockerfile) for several platforms into ONE
# OCI index and pushes it. No Docker daemon (buildah), no emulation: every Dockerfile RUN step runs
# on this machine's own architecture (see the Dockerfile), so nothing registers binfmt_misc.
#
#   hack/image/build.sh REGISTRY/REPO:TAG        (make image IMAGE=REGISTRY/REPO:TAG)
#
# Environment (all optional):
#   PLATFORMS     comma-separated, default linux/amd64,linux/arm64,linux/ppc64le,linux/s390x;
#                 one platform is still pushed as an index
#   INSECURE      1: plain HTTP / no TLS verification for the push; 0: never. Default: 1 for
#                 registries on localhost, 127.0.0.0/8 and 10.0.0.0/8, else 0
#   BASE_IMAGE    runtime base (needs python3 3.11). Default: a Debian bookworm base made here
#                 per architecture from Debian's packages (hack/image/base.sh, cached)
#   BUILD_IMAGE   build-stage base (python3 3.11 with pip, build platform). Default: likewise
#   PIP_INDEX_URL package index for the build stage (a proxy); default PyPI
#   PIP_CERT      CA bundle (a file on this machine) pip must trust; default
#                 /etc/ssl/certs/ca-certificates.crt when it exists. Passed as a build secret, so
#                 it is in no layer
#   REVISION      org.opencontainers.image.revision; default `git rev-parse HEAD` (+ -dirty)
#   SOURCE        org.opencontainers.image.source; default the git remote `origin`, if any
#   ARCHWARDEN_CACHE  cache root (default ~/.cache/archwarden); bases go to images/ below it
#
# Everything runs in a private, temporary containers-storage (removed on exit, also on failure):
# the machine's own image store is never touched and no container, image or mount is left behind.
set -euo pipefail

image=${1:?usage: build.sh REGISTRY/REPO:TAG}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
platforms=${PLATFORMS:-linux/amd64,linux/arm64,linux/ppc64le,linux/s390x}

"$here/deps.sh"

registry=${image%%/*}
host=${registry%:*}
if [ -z "${INSECURE:-}" ]; then
  case "$host" in
    localhost | 127.* | 10.* | "[::1]") INSECURE=1 ;;
    *) INSECURE=0 ;;
  esac
fi
tls_verify=true
[ "$INSECURE" = 1 ] && tls_verify=false

version=$(cd "$root" && python3 -c \
  'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
if [ -z "${REVISION:-}" ]; then
  REVISION=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
  if [ "$REVISION" != unknown ] && [ -n "$(git -C "$root" status --porcelain 2>/dev/null)" ]; then
    REVISION=$REVISION-dirty
  fi
fi
SOURCE=${SOURCE:-$(git -C "$root" remote get-url origin 2>/dev/null || echo unknown)}
# File dates in the layers and the images' creation time: the commit's, so that the same commit
# builds the same layers.
epoch=$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)
PIP_CERT=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
secret=()
if [ -s "$PIP_CERT" ]; then secret=(--secret "id=pip-cert,src=$PIP_CERT"); fi

work=$(mktemp -d "${TMPDIR:-/tmp}/archwarden-image.XXXXXX")
store=(--root "$work/storage" --runroot "$work/run" --storage-driver overlay)
list=localhost/archwarden-build:$$
cleanup() {
  local status=$?
  buildah "${store[@]}" rm --all >/dev/null 2>&1 || true
  buildah "${store[@]}" manifest rm "$list" >/dev/null 2>&1 || true
  buildah "${store[@]}" rmi --all --force >/dev/null 2>&1 || true
  grep -o " $work/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

host_arch=$(dpkg --print-architecture)
[ "$host_arch" != ppc64el ] || host_arch=ppc64le # Debian's name; OCI says ppc64le
build_image=${BUILD_IMAGE:-oci-archive:$("$here/base.sh" build "$host_arch")}
started=$(date +%s)
buildah "${store[@]}" manifest create "$list" >/dev/null
for platform in ${platforms//,/ }; do
  arch=${platform#linux/}
  arch=${arch%%/*}
  base=${BASE_IMAGE:-oci-archive:$("$here/base.sh" runtime "$arch")}
  echo "build.sh: $platform on $base" >&2
  step=$(date +%s)
  # --isolation chroot: RUN steps without a container runtime's namespaces setup (works on this
  # machine kind, where the default OCI isolation needs more than it allows).
  buildah "${store[@]}" build --quiet --isolation chroot --platform "$platform" \
    --manifest "$list" --timestamp "$epoch" --identity-label=false \
    --build-arg "BASE_IMAGE=$base" --build-arg "BUILD_IMAGE=$build_image" \
    --build-arg "PIP_INDEX_URL=${PIP_INDEX_URL:-https://pypi.org/simple}" \
    --build-arg "VERSION=$version" --build-arg "REVISION=$REVISION" --build-arg "SOURCE=$SOURCE" \
    "${secret[@]}" --file "$root/Dockerfile" "$root" >/dev/null
  echo "build.sh: $platform built in $(($(date +%s) - step)) s" >&2
done
built=$(date +%s)
buildah "${store[@]}" manifest push --quiet --all --format oci --tls-verify="$tls_verify" \
  --digestfile "$work/digest" "$list" "docker://$image"
echo "build.sh: pushed $image@$(cat "$work/digest") ($platforms; built in $((built - started)) s)" >&2
