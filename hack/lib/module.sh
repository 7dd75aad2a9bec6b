# shellcheck shell=bash
# Sourced by the scripts that copy files out of a pinned Go module (hack/*/fetch-crds.sh).
#
#   module_dir MODULE VERSION SUM   print the module's directory in the Go module cache, after
#                                   `go mod download` checked it against the checksum database
#                                   and this function against SUM (its go.sum h1: hash)
#
# The module comes from the Go module proxy into ${ARCHWARDEN_CACHE:-~/.cache/archwarden}/go/mod,
# the cache hack/cluster/build.sh uses too. Errors name the calling script and exit.

module_dir() {
	local module=$1 version=$2 sum=$3 me scratch info dir got
	me=$(basename "$0")
	local cache=${ARCHWARDEN_CACHE:-$HOME/.cache/archwarden}
	export GOMODCACHE=${ARCHWARDEN_GOMODCACHE:-$cache/go/mod}
	export GOTOOLCHAIN=auto GOFLAGS=-mod=mod
	command -v go >/dev/null || { echo "$me: 'go' not found in PATH" >&2; exit 1; }
	# Outside any module, so the repository's own go.mod files play no part.
	scratch=$(mktemp -d)
	info=$(cd "$scratch" && go mod download -json "$module@$version") || { rm -rf "$scratch"; exit 1; }
	rm -rf "$scratch"
	field() { sed -n "s/^[[:space:]]*\"$1\": \"\\(.*\\)\",\{0,1\}\$/\\1/p" <<<"$info" | head -1; }
	dir=$(field Dir)
	got=$(field Sum)
	if [ "$got" != "$sum" ]; then
		echo "$me: $module@$version has sum $got, pinned $sum" >&2
		exit 1
	fi
	printf '%s\n' "$dir"
}
