# Shared helpers for hack/cluster/{up,down,status}.sh. Sourced, not executed.
# shellcheck shell=bash

CLUSTER_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLUSTER_ROOT=$(cd "$CLUSTER_HERE/../.." && pwd)
# State directory: kubeconfig, bin/, logs/, pids/, pki/, ports.env and a `data` symlink to the
# etcd data directory (on /dev/shm when possible).
STATE=${ARCHWARDEN_CLUSTER_DIR:-$CLUSTER_ROOT/.cluster}
# shellcheck source=hack/cluster/node.sh
. "$CLUSTER_HERE/node.sh"
# Start order; down.sh stops in reverse (the real node's components first, by node_down).
COMPONENTS="etcd kube-apiserver kube-controller-manager kube-scheduler kwok"
node_enabled && COMPONENTS="$COMPONENTS $NODE_COMPONENTS"

# pid_alive <name>: the recorded process is still running the recorded executable. Guards against
# PID reuse: a pid file holds "<pid> <absolute executable path>".
pid_alive() {
	local f=$STATE/pids/$1 pid exe
	[ -f "$f" ] || return 1
	read -r pid exe <"$f" || return 1
	[ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
	[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$exe" ]
}

# log_tails [lines]: the end of every component log, for failure messages.
log_tails() {
	local n=${1:-25} f
	for f in "$STATE"/logs/*.log; do
		[ -f "$f" ] || continue
		echo "----- last $n lines of $f -----"
		tail -n "$n" "$f"
	done
}

# Load ports.env (written by up.sh) if present.
load_ports() {
	# shellcheck disable=SC1091
	[ -f "$STATE/ports.env" ] && . "$STATE/ports.env"
}

# healthy: every component alive, apiserver ready, every node Ready.
healthy() {
	local c
	[ -f "$STATE/kubeconfig" ] && [ -x "$STATE/bin/kubectl" ] || return 1
	for c in $COMPONENTS; do pid_alive "$c" || return 1; done
	"$STATE/bin/kubectl" --kubeconfig "$STATE/kubeconfig" --request-timeout=5s get --raw /readyz >/dev/null 2>&1
}

# lock_state: serialise up.sh/down.sh runs on one state directory (held until the script exits;
# child scripts inherit it through ARCHWARDEN_CLUSTER_LOCKED).
lock_state() {
	[ -z "${ARCHWARDEN_CLUSTER_LOCKED:-}" ] || return 0
	mkdir -p "$STATE"
	exec 9>"$STATE/lock"
	if ! flock -w 900 9; then
		echo "$(basename "$0"): another up.sh/down.sh holds $STATE/lock" >&2
		exit 1
	fi
	export ARCHWARDEN_CLUSTER_LOCKED=1
}

# group_alive <pgid>: some member of the process group is alive (zombies do not count: an
# orphaned daemon is reaped by PID 1, which may take its time).
group_alive() {
	ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

# stop_component <name>: SIGTERM to its process group, SIGKILL after a grace period. Returns 1
# when it was not running.
stop_component() {
	local c=$1 pid exe grace=${ARCHWARDEN_CLUSTER_STOP_GRACE:-15}
	[ -f "$STATE/pids/$c" ] && pid_alive "$c" || return 1
	read -r pid exe <"$STATE/pids/$c"
	# Started with setsid: the pid is also the process group id.
	kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
	local deadline=$((SECONDS + grace))
	while group_alive "$pid"; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			echo "$(basename "$0"): $c (pgid $pid) ignored SIGTERM for ${grace}s, sending SIGKILL" >&2
			kill -KILL -- "-$pid" 2>/dev/null || true
			sleep 0.2
			break
		fi
		sleep 0.05
	done
}
