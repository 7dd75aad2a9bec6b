#!/usr/bin/env bash
# Stop the local cluster started by hack/cluster/up.sh: each recorded process group in turn
# (reverse start order) gets SIGTERM, then SIGKILL after a grace period. Removes the etcd data, PKI,
# kubeconfig and pid files; keeps .cluster/logs/ for post-mortems. A no-op success when nothing
# is running. Verifies afterwards that none of the recorded ports is still bound.
#   hack/cluster/down.sh [--quiet]
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

QUIET=0
[ "${1:-}" = "--quiet" ] && QUIET=1
say() { [ "$QUIET" = 1 ] || echo "down.sh: $*"; }

main() {
	[ -d "$STATE" ] || { say "nothing to stop"; return 0; }
	lock_state
	local c stopped="" reversed
	# The real node first, while the API server can still tell the kubelet to stop its pods.
	node_down
	reversed=$(echo "$COMPONENTS" | tr ' ' '\n' | tac)
	# One at a time, clients before servers: stopping everything at once made the apiserver
	# linger ~10 s on its in-flight requests; in order it takes about one second.
	for c in $reversed; do
		stop_component "$c" && stopped="$stopped $c"
	done
	if [ -n "$stopped" ]; then say "stopped:$stopped"; else say "nothing was running"; fi

	load_ports || true
	local port busy=""
	for port in ${ETCD_PORT:-} ${ETCD_PEER_PORT:-} ${API_PORT:-} ${KCM_PORT:-} ${SCHED_PORT:-} ${KWOK_PORT:-} \
		${KUBELET_PORT:-} ${KUBELET_HEALTHZ_PORT:-} ${REGISTRY_PORT:-}; do
		# A listener that lingers for a moment after its process exited is given 5 s.
		local until=$((SECONDS + 5))
		while ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; do
			[ "$SECONDS" -lt "$until" ] || { busy="$busy $port"; break; }
			sleep 0.1
		done
	done

	# etcd data lives outside .cluster (tmpfs); only ever delete our own mktemp directories.
	if [ -L "$STATE/data" ]; then
		local data
		data=$(readlink "$STATE/data")
		case "$(basename "$data")" in archwarden-cluster.*) rm -rf "$data" ;; esac
		rm -f "$STATE/data"
	fi
	rm -rf "$STATE/pki" "$STATE/pids" "$STATE/kubeconfig" "$STATE/ports.env" "$STATE/env"
	if [ -n "$busy" ]; then
		echo "down.sh: ports still bound after stopping the cluster:$busy" >&2
		return 1
	fi
}

main "$@"
exit $?
