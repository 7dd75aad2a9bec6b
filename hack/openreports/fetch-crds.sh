#!/usr/bin/env bash
# Copy the OpenReports CRDs (openreports.io/v1alpha1 Report and ClusterReport) from the Go
# module that defines them into third_party/openreports/crds/, unchanged.
#
#   hack/openreports/fetch-crds.sh            fetch the pinned version and copy its CRDs
#   hack/openreports/fetch-crds.sh --check    exit 1 when the copies differ from the module's
#
# The module comes from the Go module proxy (`go mod download`), checked against the go.sum
# hash pinned below (and the checksum database, as go always does); never written by hand.
# Bump VERSION and SUM together: `go mod download -json github.com/openreports/reports-api@vX`
# prints both.
set -euo pipefail

MODULE=github.com/openreports/reports-api
VERSION=v0.2.1
SUM="h1:g9KS3yle9Y1elmww4TK9EkD1rl6inIaiIJPX6e+u680="
CRDS=(openreports.io_reports.yaml openreports.io_clusterreports.yaml)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEST=$ROOT/third_party/openreports/crds
# shellcheck source=../lib/module.sh
. "$ROOT/hack/lib/module.sh"
dir=$(module_dir "$MODULE" "$VERSION" "$SUM")

status=0
mkdir -p "$DEST"
for crd in "${CRDS[@]}"; do
	src=$dir/config/crd/$crd
	[ -f "$src" ] || { echo "fetch-crds.sh: $MODULE@$VERSION has no config/crd/$crd" >&2; exit 1; }
	if [ "${1:-}" = "--check" ]; then
		cmp -s "$src" "$DEST/$crd" || { echo "fetch-crds.sh: $DEST/$crd differs from $MODULE@$VERSION" >&2; status=1; }
	else
		install -m 0644 "$src" "$DEST/$crd"
		echo "fetch-crds.sh: $crd from $MODULE@$VERSION"
	fi
done
exit $status
