#!/usr/bin/env bash
# Installs the Debian packages the image build and its test use, when they are missing: buildah
# (builds and pushes without a daemon), mmdebstrap (the Debian base images), podman (runs the
# built image in tests/image). CI starts on fresh machines, so nothing may be assumed installed.
#
# And qemu-user for tests/image, which runs each platform's own python3 as
# `qemu-ARCH-static -L ROOTFS ROOTFS/usr/bin/python3.11 ...`: the emulator is started directly, so
# no binfmt_misc handler is needed. It is therefore NOT installed but unpacked from Debian's
# qemu-user-static package (`apt-get download`, `dpkg-deb -x`) into
# ${ARCHWARDEN_CACHE:-~/.cache/archwarden}/qemu/: installing the package would let a host's
# systemd-binfmt (its binfmt.d trigger) or binfmt-support register qemu handlers for every
# foreign architecture, changing how the whole machine executes foreign binaries. The binaries
# are static: nothing else is needed. Emulators already on PATH are used as they are. Delete that
# directory to pick up a newer package.
set -euo pipefail

QEMU_ARCHES="x86_64 aarch64 ppc64le s390x" # linux/amd64, arm64, ppc64le, s390x
qemu_dir=${ARCHWARDEN_CACHE:-$HOME/.cache/archwarden}/qemu

missing=()
for tool in buildah:buildah mmdebstrap:mmdebstrap podman:podman; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
# mmdebstrap verifies Debian's Release files with this keyring.
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
need_qemu=0
for arch in $QEMU_ARCHES; do
  command -v "qemu-$arch-static" >/dev/null || [ -x "$qemu_dir/bin/qemu-$arch-static" ] || need_qemu=1
done
[ "${#missing[@]}" -gt 0 ] || [ "$need_qemu" = 1 ] || exit 0

SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
$SUDO apt-get update -qq
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]} (Debian)" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ "$need_qemu" = 1 ]; then
  echo "unpacking qemu-user-static (Debian) into $qemu_dir: not installed, no binfmt" >&2
  work=$(mktemp -d "${TMPDIR:-/tmp}/archwarden-qemu.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  # As root, apt would hand the download to its _apt user, which cannot write to $work.
  sandbox=()
  [ "$(id -u)" != 0 ] || sandbox=(-o APT::Sandbox::User=root)
  (cd "$work" && apt-get download -qq "${sandbox[@]}" qemu-user-static)
  dpkg-deb -x "$work"/qemu-user-static_*.deb "$work/root"
  mkdir -p "$qemu_dir/bin"
  for arch in $QEMU_ARCHES; do
    install -m 0755 "$work/root/usr/bin/qemu-$arch-static" "$qemu_dir/bin/"
  done
  # shellcheck disable=SC2016 # dpkg-deb's own ${field} syntax, not the shell's
  dpkg-deb --show --showformat='${Package} ${Version} ${Architecture}\n' \
    "$work"/qemu-user-static_*.deb > "$qemu_dir/package.txt"
  # The licence of what is unpacked stays beside it.
  install -m 0644 "$work/root/usr/share/doc/qemu-user-static/copyright" "$qemu_dir/"
fi
