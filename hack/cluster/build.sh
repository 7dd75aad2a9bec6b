#!/usr/bin/env bash
# Build (or find in the cache) every binary the local cluster needs, and the chart's test tools,
# from the Go module proxy.
#
#   hack/cluster/build.sh            build what is missing, print the bin directories
#   hack/cluster/build.sh --print    only print KEY=DIR lines (for scripts; builds if missing)
#   ARCHWARDEN_BUILD_ONLY="promtool helmdocs" hack/cluster/build.sh   only those (make tools-build)
#
# Binaries are cached outside the repository, keyed by tool and version:
#   ${ARCHWARDEN_CACHE:-$HOME/.cache/archwarden}/bin/<tool>-<version>/
# Go's module and build caches live under the same root (go/mod, go/build) so that CI can cache a
# single directory. Each tool is built into a temporary directory and moved into place only when
# complete, so an interrupted build never leaves a half-populated version directory behind.
# When every final binary exists the script returns without running go at all.
# ARCHWARDEN_PRUNE_GO=1 deletes the Go module and build caches afterwards (only bin/ is needed).
#
# Versions come from the pinned wrapper modules next to this script (kube/, etcd/, kwok/, helm/,
# containerd/, promtool/, helm-docs/, vegeta/):
# their go.mod/go.sum are committed; builds run with -mod=readonly, so the pins are verified.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${ARCHWARDEN_CACHE:-$HOME/.cache/archwarden}
BIN_ROOT=$CACHE/bin
QUIET=0
[ "${1:-}" = "--print" ] && QUIET=1

log() { [ "$QUIET" = 1 ] || echo "build.sh: $*" >&2; }

# Version of a module as pinned in a wrapper go.mod (no go invocation needed).
pinned() { # <wrapper dir> <module path>
	awk -v m="$2" '($1 == m || $1 == "require" && $2 == m) { v = ($1 == m) ? $2 : $3 } END { if (v == "") exit 1; print v }' "$HERE/$1/go.mod"
}

KUBE_VERSION=$(pinned kube k8s.io/kubernetes)
ETCD_VERSION=$(pinned etcd go.etcd.io/etcd/server/v3)
KWOK_VERSION=$(pinned kwok sigs.k8s.io/kwok)
HELM_VERSION=$(pinned helm helm.sh/helm/v3)
CONTAINERD_VERSION=$(pinned containerd github.com/containerd/containerd/v2)
PROMTOOL_VERSION=$(pinned promtool github.com/prometheus/prometheus)
HELM_DOCS_VERSION=$(pinned helm-docs github.com/norwoodj/helm-docs)
VEGETA_VERSION=$(pinned vegeta github.com/tsenart/vegeta/v12)
# helm's own Makefile stamps the Kubernetes version of its client-go (v0.X.Y -> 1.X) into the
# binary: without it `helm template` and `helm lint` assume v1.20 for .Capabilities.KubeVersion
# (and for chart kubeVersion checks and deprecation lints). The stamped version is part of the
# cache key, so a binary built without it is never reused.
HELM_K8S_MINOR=$(pinned helm k8s.io/client-go | cut -d. -f2)

KUBE_DIR=$BIN_ROOT/kubernetes-$KUBE_VERSION
ETCD_DIR=$BIN_ROOT/etcd-$ETCD_VERSION
KWOK_DIR=$BIN_ROOT/kwok-$KWOK_VERSION
HELM_DIR=$BIN_ROOT/helm-$HELM_VERSION-k8s1.$HELM_K8S_MINOR
PROMTOOL_DIR=$BIN_ROOT/promtool-$PROMTOOL_VERSION
HELM_DOCS_DIR=$BIN_ROOT/helm-docs-$HELM_DOCS_VERSION
VEGETA_DIR=$BIN_ROOT/vegeta-$VEGETA_VERSION
# The kubelet has a directory of its own so that a cache holding the control plane alone is
# completed by one short build instead of rebuilding everything.
KUBELET_DIR=$BIN_ROOT/kubelet-$KUBE_VERSION
CONTAINERD_DIR=$BIN_ROOT/containerd-$CONTAINERD_VERSION
# Kubernetes' own test credential provider (test/e2e_node/plugins/gcp-credential-provider), from
# the same k8s.io/kubernetes pin: a plugin written by others for archwarden and the real node's
# kubelet to run alike (its token endpoint is reached through HTTP_PROXY set in the config's env).
GCPCP_DIR=$BIN_ROOT/gcp-credential-provider-$KUBE_VERSION

have_all() { # <dir> <binary>...
	local d=$1; shift
	for b in "$@"; do [ -x "$d/$b" ] || return 1; done
}

go_env() {
	export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"
	export GOMODCACHE=${ARCHWARDEN_GOMODCACHE:-$CACHE/go/mod}
	export GOCACHE=${ARCHWARDEN_GOCACHE:-$CACHE/go/build}
	command -v go >/dev/null || { echo "build.sh: 'go' not found in PATH (need Go >= 1.26)" >&2; exit 1; }
}

# build_into <final dir> <wrapper dir> <go build args...>: builds with -o into a temp dir, then
# renames it into place (atomic on the same filesystem).
build_into() {
	local final=$1 wrapper=$2; shift 2
	local tmp start
	mkdir -p "$BIN_ROOT"
	tmp=$(mktemp -d "$BIN_ROOT/.tmp-$(basename "$final").XXXXXX")
	start=$(date +%s)
	log "building $(basename "$final") (log: $tmp.log)"
	if ! (cd "$HERE/$wrapper" && go build -trimpath -o "$tmp/" "$@") >"$tmp.log" 2>&1; then
		cat "$tmp.log" >&2
		rm -rf "$tmp"
		echo "build.sh: building $(basename "$final") failed" >&2
		exit 1
	fi
	rm -f "$tmp.log"
	[ -z "${POST_BUILD:-}" ] || "$POST_BUILD" "$tmp"
	chmod 0755 "$tmp"
	rm -rf "$final"
	mv "$tmp" "$final"
	log "built $(basename "$final") in $(( $(date +%s) - start ))s"
}

# Same -X flags as upstream hack/lib/version.sh so /version reports the real version.
kube_ldflags() {
	local minor ld kv
	minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
	ld="-s -w"
	for kv in "gitVersion=$KUBE_VERSION" gitMajor=1 "gitMinor=$minor" gitTreeState=clean \
		buildDate=1970-01-01T00:00:00Z; do
		ld="$ld -X k8s.io/component-base/version.$kv -X k8s.io/client-go/pkg/version.$kv"
	done
	echo "$ld"
}

build_kube() {
	have_all "$KUBE_DIR" kube-apiserver kube-controller-manager kube-scheduler kubectl && return 0
	go_env
	build_into "$KUBE_DIR" kube -tags selinux,notest,grpcnotrace -ldflags "$(kube_ldflags)" \
		k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
		k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
}

# The real node's kubelet: same wrapper module (same pins) and flags as the control plane.
build_kubelet() {
	have_all "$KUBELET_DIR" kubelet && return 0
	go_env
	build_into "$KUBELET_DIR" kube -tags selinux,notest,grpcnotrace -ldflags "$(kube_ldflags)" \
		k8s.io/kubernetes/cmd/kubelet
}

build_gcpcredprovider() {
	have_all "$GCPCP_DIR" gcp-credential-provider && return 0
	go_env
	build_into "$GCPCP_DIR" kube -ldflags "-s -w" \
		k8s.io/kubernetes/test/e2e_node/plugins/gcp-credential-provider
}

# containerd 2.x for the real node, static (CGO off): urfave_cli_no_docs drops the man-page
# generator, and the shim is built without its gRPC server as upstream's release builds do.
build_containerd() {
	have_all "$CONTAINERD_DIR" containerd ctr containerd-shim-runc-v2 && return 0
	go_env
	local ld="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
	ld="$ld -X github.com/containerd/containerd/v2/version.Revision=$CONTAINERD_VERSION"
	POST_BUILD=containerd_shim build_into "$CONTAINERD_DIR" containerd -tags urfave_cli_no_docs \
		-ldflags "$ld" github.com/containerd/containerd/v2/cmd/containerd \
		github.com/containerd/containerd/v2/cmd/ctr
}

containerd_shim() { # <tmp bin dir>
	(cd "$HERE/containerd" && go build -trimpath -o "$1/" -tags urfave_cli_no_docs,no_grpc \
		-ldflags "-s -w" github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2)
}

build_etcd() {
	have_all "$ETCD_DIR" etcd && return 0
	go_env
	build_into "$ETCD_DIR" etcd -ldflags "-s -w" .
}

# Standalone kwok has no built-in stages (only kwokctl embeds them). Concatenate the upstream
# "fast" node/pod stages and the lease heartbeat from the module cache into stages.yaml next to
# the binary, so nothing is copied into this repository and up.sh needs no go at run time.
KWOK_STAGES="node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml"

build_kwok() {
	have_all "$KWOK_DIR" kwok && [ -s "$KWOK_DIR/stages.yaml" ] && return 0
	go_env
	POST_BUILD=kwok_stages build_into "$KWOK_DIR" kwok -ldflags "-s -w" sigs.k8s.io/kwok/cmd/kwok
}

kwok_stages() { # <tmp bin dir>
	local dir f
	dir=$(cd "$HERE/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
	for f in $KWOK_STAGES; do
		printf -- '---\n# from sigs.k8s.io/kwok@%s/kustomize/stage/%s\n' "$KWOK_VERSION" "$f"
		cat "$dir/kustomize/stage/$f"
	done >"$1/stages.yaml"
}

build_helm() {
	have_all "$HELM_DIR" helm && return 0
	go_env
	local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
	ld="$ld -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
	local pkg
	for pkg in pkg/lint/rules pkg/chartutil; do
		ld="$ld -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$HELM_K8S_MINOR"
	done
	build_into "$HELM_DIR" helm -ldflags "$ld" helm.sh/helm/v3/cmd/helm
}

# promtool checks and unit-tests the chart's PrometheusRule. remove_all_sd (upstream's build tag)
# leaves out the service-discovery plugins promtool never needs for rules: a much smaller build.
build_promtool() {
	have_all "$PROMTOOL_DIR" promtool && return 0
	go_env
	local ld="-s -w" kv
	for kv in "Version=${PROMTOOL_VERSION#v}" "Revision=$PROMTOOL_VERSION" Branch=module \
		BuildUser=archwarden BuildDate=19700101-00:00:00; do
		ld="$ld -X github.com/prometheus/common/version.$kv"
	done
	build_into "$PROMTOOL_DIR" promtool -tags remove_all_sd -ldflags "$ld" \
		github.com/prometheus/prometheus/cmd/promtool
}

# helm-docs writes the chart README's values table.
build_helmdocs() {
	have_all "$HELM_DOCS_DIR" helm-docs && return 0
	go_env
	build_into "$HELM_DOCS_DIR" helm-docs -ldflags "-s -w -X main.version=$HELM_DOCS_VERSION" \
		github.com/norwoodj/helm-docs/cmd/helm-docs
}

# vegeta: the benches' open-loop HTTP load (a constant request rate whatever the server does,
# latency per request), which a Python generator on the same two cores cannot offer below a
# few milliseconds of its own jitter.
build_vegeta() {
	have_all "$VEGETA_DIR" vegeta && return 0
	go_env
	build_into "$VEGETA_DIR" vegeta -ldflags "-s -w -X main.Version=$VEGETA_VERSION" \
		github.com/tsenart/vegeta/v12
}

main() {
	local t only=${ARCHWARDEN_BUILD_ONLY:-kube etcd kwok helm kubelet containerd}
	for t in $only; do "build_$t"; done
	# CI can cache bin/ alone (~0.4 GB) and drop Go's caches (~7 GB) after a build.
	if [ "${ARCHWARDEN_PRUNE_GO:-0}" = 1 ] && [ -d "$CACHE/go" ]; then
		go_env
		log "pruning Go caches under $CACHE/go"
		go clean -cache -modcache
		rm -rf "$CACHE/go"
	fi
	printf 'KUBE_BIN=%s\nETCD_BIN=%s\nKWOK_BIN=%s\nHELM_BIN=%s\nKUBELET_BIN=%s\nCONTAINERD_BIN=%s\n' \
		"$KUBE_DIR" "$ETCD_DIR" "$KWOK_DIR" "$HELM_DIR" "$KUBELET_DIR" "$CONTAINERD_DIR"
	printf 'PROMTOOL_BIN=%s\nHELM_DOCS_BIN=%s\nVEGETA_BIN=%s\n' "$PROMTOOL_DIR" "$HELM_DOCS_DIR" \
		"$VEGETA_DIR"
	printf 'GCP_CREDENTIAL_PROVIDER_BIN=%s\n' "$GCPCP_DIR"
}

# Everything is parsed before anything runs, so editing this file during a long build is safe.
main "$@"; exit $?
