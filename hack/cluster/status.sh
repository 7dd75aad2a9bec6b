#!/usr/bin/env bash
# Exit 0 when the local cluster in .cluster/ is up and healthy (all components alive, apiserver
# /readyz OK); print a short summary. Exit 1 otherwise.
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
if healthy; then
	load_ports
	echo "cluster up: https://127.0.0.1:$API_PORT  KUBECONFIG=$STATE/kubeconfig"
	"$STATE/bin/kubectl" --kubeconfig "$STATE/kubeconfig" get nodes -L kubernetes.io/arch,kubernetes.io/os
else
	echo "cluster not running (or unhealthy); see $STATE/logs/ and run make cluster-up"
	exit 1
fi
