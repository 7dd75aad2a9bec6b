#!/usr/bin/env bash
# Real Karpenter with its kwok cloud provider, and the CRDs archwarden's capacity sources read,
# from the Go module proxy (nothing third-party is written by hand or copied into the repo).
#
#   hack/karpenter/build.sh          build/fetch what is missing, print KEY=DIR lines
#   hack/karpenter/build.sh crds     only the CRDs (go mod download, seconds), print KEY=DIR lines
#
# Cached outside the repository, keyed by version, like hack/cluster/build.sh:
#   ${ARCHWARDEN_CACHE:-$HOME/.cache/archwarden}/bin/karpenter-kwok-<version>/karpenter
#       go build sigs.k8s.io/karpenter/kwok (pinned in go.mod here)
#   ${ARCHWARDEN_CACHE:-$HOME/.cache/archwarden}/bin/karpenter-crds-<version>/
#       karpenter.sh_nodepools.yaml, karpenter.sh_nodeclaims.yaml (kwok/charts/crds/),
#       karpenter.kwok.sh_kwoknodeclasses.yaml (kwok/apis/crds/), LICENSE (Apache-2.0)
#   ${ARCHWARDEN_CACHE:-$HOME/.cache/archwarden}/bin/cluster-api-crds-<version>/
#       cluster.x-k8s.io_{machinedeployments,machinesets,machinepools}.yaml from the module
#       sigs.k8s.io/cluster-api (config/crd/bases, exp/config/crd/bases), LICENSE (Apache-2.0)
# Each goes to a temporary directory first and is renamed into place when complete.
# sigs.k8s.io/karpenter v1.15 needs go >= 1.26.9: GOTOOLCHAIN=auto fetches it through the proxy.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${ARCHWARDEN_CACHE:-$HOME/.cache/archwarden}
BIN_ROOT=$CACHE/bin
# Cluster API is read for its CRDs alone (no code is built), so its version is pinned here.
CAPI_VERSION=${ARCHWARDEN_CAPI_VERSION:-v1.11.3}

log() { echo "karpenter/build.sh: $*" >&2; }

KARPENTER_VERSION=$(awk '($1 == "sigs.k8s.io/karpenter") { print $2 }' "$HERE/go.mod")
[ -n "$KARPENTER_VERSION" ] || { echo "karpenter/build.sh: sigs.k8s.io/karpenter not pinned in $HERE/go.mod" >&2; exit 1; }
KARPENTER_DIR=$BIN_ROOT/karpenter-kwok-$KARPENTER_VERSION
KARPENTER_CRDS=$BIN_ROOT/karpenter-crds-$KARPENTER_VERSION
CAPI_DIR=$BIN_ROOT/cluster-api-crds-$CAPI_VERSION

go_env() {
	export GOTOOLCHAIN=auto CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"
	export GOMODCACHE=${ARCHWARDEN_GOMODCACHE:-$CACHE/go/mod}
	export GOCACHE=${ARCHWARDEN_GOCACHE:-$CACHE/go/build}
	command -v go >/dev/null || { echo "karpenter/build.sh: 'go' not found in PATH" >&2; exit 1; }
}

# copy_with_source <file> <dest> <source note>: the CRD as shipped, after one comment line.
copy_with_source() {
	{ printf '# %s\n' "$3"; cat "$1"; } >"$2"
}

build_karpenter() {
	[ -x "$KARPENTER_DIR/karpenter" ] && return 0
	go_env
	local tmp start
	mkdir -p "$BIN_ROOT"
	tmp=$(mktemp -d "$BIN_ROOT/.tmp-karpenter-kwok.XXXXXX")
	start=$(date +%s)
	log "building karpenter-kwok-$KARPENTER_VERSION (about 2.5 min cold; log: $tmp.log)"
	if ! (cd "$HERE" && go build -trimpath -ldflags "-s -w" -o "$tmp/karpenter" sigs.k8s.io/karpenter/kwok) >"$tmp.log" 2>&1; then
		cat "$tmp.log" >&2
		rm -rf "$tmp" "$tmp.log"
		echo "karpenter/build.sh: building karpenter failed" >&2
		exit 1
	fi
	rm -f "$tmp.log"
	chmod 0755 "$tmp"
	rm -rf "$KARPENTER_DIR"
	mv "$tmp" "$KARPENTER_DIR"
	log "built karpenter-kwok-$KARPENTER_VERSION in $(($(date +%s) - start))s"
}

fetch_karpenter_crds() {
	[ -s "$KARPENTER_CRDS/karpenter.sh_nodepools.yaml" ] && return 0
	go_env
	local tmp src f
	mkdir -p "$BIN_ROOT"
	tmp=$(mktemp -d "$BIN_ROOT/.tmp-karpenter-crds.XXXXXX")
	# The module pinned in go.mod (go.sum verifies it); downloading it builds nothing.
	src=$(cd "$HERE" && go mod download -json sigs.k8s.io/karpenter | awk -F'"' '/"Dir":/ { print $4 }')
	[ -d "$src" ] || { rm -rf "$tmp"; echo "karpenter/build.sh: cannot download sigs.k8s.io/karpenter" >&2; exit 1; }
	for f in kwok/charts/crds/karpenter.sh_nodepools.yaml kwok/charts/crds/karpenter.sh_nodeclaims.yaml \
		kwok/apis/crds/karpenter.kwok.sh_kwoknodeclasses.yaml; do
		copy_with_source "$src/$f" "$tmp/$(basename "$f")" \
			"from sigs.k8s.io/karpenter@$KARPENTER_VERSION/$f (Apache-2.0, see LICENSE)"
	done
	cp "$src/LICENSE" "$tmp/LICENSE"
	chmod -R u+w,go-w "$tmp"
	chmod 0755 "$tmp"
	rm -rf "$KARPENTER_CRDS"
	mv "$tmp" "$KARPENTER_CRDS"
	log "fetched Karpenter $KARPENTER_VERSION CRDs"
}

fetch_capi() {
	[ -s "$CAPI_DIR/cluster.x-k8s.io_machinedeployments.yaml" ] && return 0
	go_env
	local tmp src f
	mkdir -p "$BIN_ROOT"
	tmp=$(mktemp -d "$BIN_ROOT/.tmp-cluster-api-crds.XXXXXX")
	# go mod download checks the module against the checksum database.
	src=$(cd "$HERE" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/cluster-api@$CAPI_VERSION" |
		awk -F'"' '/"Dir":/ { print $4 }')
	[ -d "$src" ] || { rm -rf "$tmp"; echo "karpenter/build.sh: cannot download sigs.k8s.io/cluster-api@$CAPI_VERSION" >&2; exit 1; }
	for f in config/crd/bases/cluster.x-k8s.io_machinedeployments.yaml \
		config/crd/bases/cluster.x-k8s.io_machinesets.yaml \
		config/crd/bases/cluster.x-k8s.io_machinepools.yaml; do
		[ -f "$src/$f" ] || f=exp/$f
		copy_with_source "$src/$f" "$tmp/$(basename "$f")" \
			"from sigs.k8s.io/cluster-api@$CAPI_VERSION/$f (Apache-2.0, see LICENSE)"
	done
	cp "$src/LICENSE" "$tmp/LICENSE"
	chmod -R u+w,go-w "$tmp"
	chmod 0755 "$tmp"
	rm -rf "$CAPI_DIR"
	mv "$tmp" "$CAPI_DIR"
	log "fetched Cluster API $CAPI_VERSION CRDs"
}

case "${1:-all}" in
crds) ;;
all) build_karpenter ;;
*) echo "usage: $0 [crds]" >&2; exit 2 ;;
esac
fetch_karpenter_crds
fetch_capi
printf 'KARPENTER_BIN=%s\nKARPENTER_CRDS=%s\nCAPI_CRDS=%s\n' "$KARPENTER_DIR" "$KARPENTER_CRDS" "$CAPI_DIR"
