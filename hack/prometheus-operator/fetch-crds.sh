#!/usr/bin/env bash
# Copy the Prometheus Operator's PrometheusRule and ServiceMonitor CRDs (monitoring.coreos.com/v1)
# from the project's own Go module into third_party/prometheus-operator/crds/, unchanged, with
# its LICENSE and NOTICE. The chart's optional objects are applied against them on the local
# cluster (tests/chart/test_monitoring_cluster.py).
#
#   hack/prometheus-operator/fetch-crds.sh            fetch the pinned version and copy the files
#   hack/prometheus-operator/fetch-crds.sh --check    exit 1 when the copies differ from the module's
#   hack/prometheus-operator/fetch-crds.sh --download only download and verify the module (make
#                                                     tools-build: the --check test then reads the cache)
#
# The module comes from the Go module proxy (`go mod download`), checked against the go.sum hash
# pinned below (and the checksum database, as go always does); never written by hand. v0.85.0 is
# the newest version of the root module the proxy serves (later tags answer "not available"); the
# submodule pkg/apis/monitoring, which is served at later versions, ships Go types but no CRD YAML.
# Bump VERSION and SUM together: `go mod download -json MODULE@vX` prints both.
set -euo pipefail

MODULE=github.com/prometheus-operator/prometheus-operator
VERSION=v0.85.0
SUM="h1:M5xLCLEoaW2IJfnuCwFzzpL+jSVQu3KGT84Pye+fW8s="
SRC_DIR=example/prometheus-operator-crd
FILES=(
	"$SRC_DIR/monitoring.coreos.com_prometheusrules.yaml"
	"$SRC_DIR/monitoring.coreos.com_servicemonitors.yaml"
	LICENSE
	NOTICE
)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEST=$ROOT/third_party/prometheus-operator
# shellcheck source=../lib/module.sh
. "$ROOT/hack/lib/module.sh"
dir=$(module_dir "$MODULE" "$VERSION" "$SUM")
[ "${1:-}" = "--download" ] && exit 0

status=0
for file in "${FILES[@]}"; do
	src=$dir/$file
	# CRDs under crds/, the license files beside this directory's README.
	case $file in
	*.yaml) dest=$DEST/crds/$(basename "$file") ;;
	*) dest=$DEST/$file ;;
	esac
	[ -f "$src" ] || { echo "fetch-crds.sh: $MODULE@$VERSION has no $file" >&2; exit 1; }
	if [ "${1:-}" = "--check" ]; then
		cmp -s "$src" "$dest" || { echo "fetch-crds.sh: $dest differs from $MODULE@$VERSION/$file" >&2; status=1; }
	else
		mkdir -p "$(dirname "$dest")"
		install -m 0644 "$src" "$dest"
		echo "fetch-crds.sh: $file from $MODULE@$VERSION"
	fi
done
exit $status
