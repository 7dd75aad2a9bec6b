#!/usr/bin/env bash
# Makes a Debian bookworm base image from Debian's own packages (no image is pulled from any
# registry) and prints the path of its OCI archive; cached, so only the first call builds.
#
#   hack/image/base.sh runtime ARCH   python3 + ca-certificates for ARCH (amd64, arm64, ppc64le,
#                                     s390x): the runtime stage's BASE_IMAGE
#   hack/image/base.sh build ARCH     python3 + pip for the build platform: BUILD_IMAGE
#
# Foreign architectures without emulation: the runtime base is made with
# `mmdebstrap --variant=extract`, which unpacks the packages and runs none of their maintainer
# scripts (those would be foreign binaries; this machine registers no binfmt_misc/qemu). What the
# scripts would have done and the image needs is done here from the host, architecture-neutral:
# the CA bundle is concatenated from ca-certificates' PEM files, and the standard library is
# byte-compiled by the host's Python 3.11 (the same bytecode for every architecture). The build
# base is native, so `--variant=minbase` installs it properly (maintainer scripts included).
#
# Cache: ${ARCHWARDEN_CACHE:-~/.cache/archwarden}/images/, keyed by a hash of this script (the
# recipe) and the arguments; delete the directory, or set ARCHWARDEN_BASE_REFRESH=1, to pick up
# newer Debian packages (security updates).
set -euo pipefail

kind=${1:?usage: base.sh runtime|build ARCH}
arch=${2:?usage: base.sh runtime|build ARCH}
here=$(cd "$(dirname "$0")" && pwd)
cache=${ARCHWARDEN_CACHE:-$HOME/.cache/archwarden}/images
suite=bookworm
mirrors=(
  "deb http://deb.debian.org/debian $suite main"
  "deb http://deb.debian.org/debian $suite-updates main"
  "deb http://deb.debian.org/debian-security $suite-security main"
)
# libstdc++6: frozenlist's compiled extension is C++ (Cython) and needs libstdc++.so.6; without it
# frozenlist falls back to pure Python without a word (found by running each platform's image
# under qemu-user in tests/image). python3 does not pull it in.
case "$kind" in
  runtime) variant=extract; packages=python3,ca-certificates,base-files,libstdc++6 ;;
  build) variant=minbase; packages=python3,python3-pip,ca-certificates ;;
  *) echo "base.sh: unknown kind $kind (runtime or build)" >&2; exit 2 ;;
esac
# ARCH is the OCI name (the image's platform); Debian calls little-endian POWER ppc64el.
case "$arch" in
  amd64 | arm64 | s390x) debian_arch=$arch ;;
  ppc64le) debian_arch=ppc64el ;;
  *) echo "base.sh: unsupported architecture $arch" >&2; exit 2 ;;
esac
if [ "$kind" = build ] && [ "$debian_arch" != "$(dpkg --print-architecture)" ]; then
  echo "base.sh: the build base runs on this machine: $(dpkg --print-architecture), not $arch" >&2
  exit 2
fi

key=$( { cat "$0"; echo "$kind $arch ${mirrors[*]}"; } | sha256sum | cut -c1-16)
archive=$cache/base-$kind-$arch-$key.tar
if [ -s "$archive" ] && [ "${ARCHWARDEN_BASE_REFRESH:-0}" != 1 ]; then
  echo "$archive"
  exit 0
fi
"$here/deps.sh"
mkdir -p "$cache"

work=$(mktemp -d "${TMPDIR:-/tmp}/archwarden-base.XXXXXX")
store=(--root "$work/storage" --runroot "$work/run" --storage-driver overlay)
container=""
cleanup() {
  # A working container and its overlay mounts live in this private store; nothing outside it.
  if [ -n "$container" ]; then buildah "${store[@]}" rm "$container" >/dev/null 2>&1 || true; fi
  buildah "${store[@]}" rmi --all --force >/dev/null 2>&1 || true
  grep -o " $work/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "base.sh: building the $kind base for linux/$arch (mmdebstrap --variant=$variant)" >&2
rootfs=$work/rootfs
debootstrap() {
  rm -rf "$rootfs"
  mmdebstrap --quiet --variant="$variant" --architectures="$debian_arch" --include="$packages" \
    --format=directory \
    --setup-hook=/usr/share/mmdebstrap/hooks/merged-usr/setup00.sh \
    --skip=cleanup/apt/cache --skip=essential/unlink \
    "$suite" "$rootfs" "$@" >&2
}
degraded=""
if ! debootstrap "${mirrors[@]}"; then
  # Seen here: the mirror served bookworm-security's ppc64el Packages.xz older than its InRelease
  # ("File has unexpected size ... Mirror sync in progress?") for hours. Rather than no image, a
  # base without the security suite, said loudly and never cached: the next build tries again.
  echo "base.sh: WARNING: linux/$arch: $suite-security unusable; this base has NO security" \
    "updates and is not cached" >&2
  degraded=" WITHOUT $suite-security (mirror failure)"
  debootstrap "${mirrors[@]:0:2}"
fi

# The package list (name, version, architecture) of what went in, from the downloaded .debs; an
# extract-variant root has no dpkg database, so this file is the record of its contents.
for deb in "$rootfs"/var/cache/apt/archives/*.deb; do
  # shellcheck disable=SC2016 # dpkg-deb's own ${field} syntax, not the shell's
  dpkg-deb --show --showformat='${Package} ${Version} ${Architecture}\n' "$deb"
done | sort > "$work/packages.txt"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

if [ "$kind" = runtime ]; then
  # update-ca-certificates (ca-certificates' postinst) would write this bundle: every certificate
  # of the package, concatenated. /usr/lib/ssl/cert.pem (OpenSSL's default CA file) points here.
  mkdir -p "$rootfs/etc/ssl/certs"
  find "$rootfs/usr/share/ca-certificates" -name '*.crt' -print0 | LC_ALL=C sort -z \
    | xargs -0 cat > "$rootfs/etc/ssl/certs/ca-certificates.crt"
  grep -q 'BEGIN CERTIFICATE' "$rootfs/etc/ssl/certs/ca-certificates.crt"
  # python3.11-minimal's postinst would byte-compile the standard library. Without it every start
  # compiles the imported modules again in memory (the root filesystem is read-only), which costs
  # about a second. The host's Python 3.11 writes the same bytecode any 3.11 reads;
  # unchecked-hash: the files are immutable in an image.
  host_python=""
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null \
      && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      host_python=$candidate
      break
    fi
  done
  if [ -n "$host_python" ]; then
    "$host_python" -m compileall -q -j 0 --invalidation-mode unchecked-hash -s "$rootfs" -p / \
      -x '/(test|idlelib|lib2to3/tests)/' "$rootfs/usr/lib/python3.11" >/dev/null
  else
    echo "base.sh: no Python 3.11 on this machine: standard library left uncompiled" >&2
  fi
  # Documentation is not needed to run; copyright files stay (the licences of what is shipped).
  find "$rootfs/usr/share/doc" -type f ! -name copyright -delete
  find "$rootfs/usr/share/doc" -type l -delete
  rm -rf "$rootfs"/usr/share/{man,info,locale,lintian}
fi
# Device nodes are the runtime's business (it mounts /dev); an image carries an empty /dev.
find "$rootfs/dev" -mindepth 1 -delete
install -D -m 0644 "$work/packages.txt" "$rootfs/usr/share/archwarden-base/packages.txt"

# Into an image: one layer, the platform set from ARCH. The tar is made here (numeric owners,
# sorted names) so that buildah only unpacks it.
tar --create --file "$work/rootfs.tar" --directory "$rootfs" --numeric-owner --sort=name \
  --xattrs --acls .
container=$(buildah "${store[@]}" from --quiet scratch)
buildah "${store[@]}" add --quiet "$container" "$work/rootfs.tar" / >/dev/null
buildah "${store[@]}" config --os linux --arch "$arch" \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
  --cmd '["python3"]' \
  --label "org.opencontainers.image.description=Debian $suite$degraded: $packages ($kind base of archwarden, hack/image/base.sh)" \
  --created-by "hack/image/base.sh $kind $arch (mmdebstrap --variant=$variant)" "$container"
buildah "${store[@]}" commit --quiet --rm "$container" "oci-archive:$work/base.tar" >/dev/null
container=""
if [ -n "$degraded" ]; then
  archive=${archive%.tar}-degraded-$$.tar # found by no later lookup; removed as superseded
fi
cp "$work/packages.txt" "${archive%.tar}.packages"
mv "$work/base.tar" "$archive"
# Archives of older recipes for this kind and architecture are superseded.
for old in "$cache/base-$kind-$arch-"*; do
  case "$old" in "${archive%.tar}".*) ;; *) rm -f "$old" ;; esac
done
echo "$archive"
