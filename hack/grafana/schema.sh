#!/usr/bin/env bash
# Grafana's dashboard schema as JSON Schema, in third_party/grafana/, for the chart's dashboard
# test (tests/chart/test_observability.py validates the generated dashboard against it).
#
#   hack/grafana/schema.sh            regenerate third_party/grafana/*.schema.json
#   hack/grafana/schema.sh --check    exit 1 when the committed files differ from a regeneration
#   hack/grafana/schema.sh --install  only install the pinned packages into the cache (make
#                                     tools-build: the --check test then needs no download)
#
# Grafana publishes its dashboard model in the npm package @grafana/schema (Apache-2.0) as
# TypeScript types that Grafana generates from its CUE dashboard kind; it ships no JSON Schema.
# ts-json-schema-generator turns those types into JSON Schema (draft-07) mechanically: nothing
# here is written by hand. Both packages, and everything they pull in, are pinned with their
# integrity hashes by package.json and package-lock.json beside this script and installed with
# `npm ci` into a cache directory keyed by the lock file's hash:
#   ${ARCHWARDEN_CACHE:-$HOME/.cache/archwarden}/node/grafana-schema-<sha256 of the lock, 12>/
# To bump: edit package.json, run `npm install --package-lock-only --ignore-scripts` here, then
# this script, and review the schema diff.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DEST=$ROOT/third_party/grafana
CACHE=${ARCHWARDEN_CACHE:-$HOME/.cache/archwarden}

log() { echo "grafana/schema.sh: $*" >&2; }
command -v npm >/dev/null || { log "'npm' not found in PATH (make deps installs Debian's)"; exit 1; }

key=$(sha256sum "$HERE/package-lock.json" | cut -c1-12)
DIR=$CACHE/node/grafana-schema-$key
if [ ! -x "$DIR/node_modules/.bin/ts-json-schema-generator" ]; then
	mkdir -p "$CACHE/node"
	tmp=$(mktemp -d "$CACHE/node/.tmp-grafana-schema.XXXXXX")
	cp "$HERE/package.json" "$HERE/package-lock.json" "$tmp/"
	# --ignore-scripts: nothing the packages ship runs at install time.
	if ! (cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >"$tmp.log" 2>&1; then
		cat "$tmp.log" >&2
		rm -rf "$tmp" "$tmp.log"
		log "npm ci failed"
		exit 1
	fi
	rm -f "$tmp.log"
	rm -rf "$DIR"
	mv "$tmp" "$DIR"
	log "installed @grafana/schema and ts-json-schema-generator into $DIR"
fi
[ "${1:-}" = "--install" ] && exit 0

TYPES=$DIR/node_modules/@grafana/schema/dist/types/raw
VERSION=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' "$DIR/node_modules/@grafana/schema/package.json")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# generate <types file under raw/> <type or '*'> <output name>
generate() {
	(cd "$DIR" && node_modules/.bin/ts-json-schema-generator --path "$TYPES/$1" --type "$2" \
		--no-type-check) >"$out/$3"
}
# The dashboard (panels' options and fieldConfig.defaults.custom are open objects there: each
# panel plugin has its own schema) and the plugin schemas of the panel types the chart uses.
generate dashboard/x/types.gen.d.ts Dashboard dashboard.schema.json
for panel in timeseries bargauge stat; do
	generate "composable/$panel/panelcfg/x/types.gen.d.ts" '*' "panel-$panel.schema.json"
done
cp "$DIR/node_modules/@grafana/schema/LICENSE_APACHE2" "$out/LICENSE"
echo "$VERSION" >"$out/VERSION"

status=0
for file in "$out"/*; do
	name=$(basename "$file")
	if [ "${1:-}" = "--check" ]; then
		cmp -s "$file" "$DEST/$name" || { log "$DEST/$name differs from @grafana/schema $VERSION"; status=1; }
	else
		mkdir -p "$DEST"
		install -m 0644 "$file" "$DEST/$name"
		log "$name from @grafana/schema $VERSION"
	fi
done
exit $status
