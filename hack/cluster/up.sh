#!/usr/bin/env bash
# Start the local multi-arch cluster: etcd, a secure kube-apiserver on 127.0.0.1 (fresh PKI,
# client-certificate auth, RBAC), kube-controller-manager, kube-scheduler and kwok with the fake
# nodes of hack/cluster/nodes.yaml. Everything runs as background process groups recorded in
# .cluster/pids/; hack/cluster/down.sh stops them.
#
#   hack/cluster/up.sh             reuse a healthy running cluster, otherwise (re)start cleanly
#   hack/cluster/up.sh --restart   always stop and start from scratch
#
# Afterwards: .cluster/kubeconfig (admin, system:masters), .cluster/bin/{kubectl,helm},
# .cluster/ports.env, .cluster/env (source it for KUBECONFIG and PATH), .cluster/logs/*.log.
# Environment: ARCHWARDEN_CACHE (binary cache root), ARCHWARDEN_CLUSTER_DIR (state dir),
# ARCHWARDEN_CLUSTER_TIMEOUT (seconds per readiness wait, default 90).
set -Eeuo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

TIMEOUT=${ARCHWARDEN_CLUSTER_TIMEOUT:-90}
T0=$(date +%s.%N)

main() {
	lock_state
	if [ "${1:-}" != "--restart" ] && healthy; then
		echo "up.sh: cluster already up and healthy, reusing it (KUBECONFIG=$STATE/kubeconfig)"
		return 0
	fi
	local tool missing=""
	for tool in openssl curl python3 setsid flock ps awk base64; do
		command -v "$tool" >/dev/null || missing="$missing $tool"
	done
	[ -z "$missing" ] || { echo "up.sh: missing commands:$missing" >&2; exit 1; }
	# Anything left from an earlier or failed run goes first.
	"$CLUSTER_HERE/down.sh" --quiet
	! node_enabled || node_free

	local dirs
	dirs=$("$CLUSTER_HERE/build.sh")
	eval "$dirs" # KUBE_BIN ETCD_BIN KWOK_BIN HELM_BIN KUBELET_BIN CONTAINERD_BIN
	! node_enabled || node_prereqs
	local tb
	tb=$(date +%s.%N)

	mkdir -p "$STATE"/{bin,logs,pids,pki}
	rm -f "$STATE"/logs/*.log
	ln -sfn "$KUBE_BIN/kubectl" "$STATE/bin/kubectl"
	ln -sfn "$HELM_BIN/helm" "$STATE/bin/helm"
	ln -sfn "$CONTAINERD_BIN/ctr" "$STATE/bin/ctr"
	KUBECTL=$STATE/bin/kubectl

	# etcd data on tmpfs when possible (fast, and gone after a reboot); fresh every run.
	local base=/dev/shm
	[ -d "$base" ] && [ -w "$base" ] || base=${TMPDIR:-/tmp}
	DATA=$(mktemp -d "$base/archwarden-cluster.XXXXXX")
	ln -sfn "$DATA" "$STATE/data"

	pick_ports
	make_pki
	trap 'on_error $LINENO' ERR

	start etcd "$ETCD_BIN/etcd" --name=archwarden --data-dir="$DATA/etcd" \
		--listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-cluster="archwarden=http://127.0.0.1:$ETCD_PEER_PORT" \
		--unsafe-no-fsync=true --log-level=warn
	wait_until "etcd /health" curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

	local p=$STATE/pki
	start kube-apiserver "$KUBE_BIN/kube-apiserver" \
		--etcd-servers="http://127.0.0.1:$ETCD_PORT" \
		--bind-address=127.0.0.1 --secure-port="$API_PORT" --advertise-address=127.0.0.1 \
		--endpoint-reconciler-type=none \
		--cert-dir="$p" --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
		--client-ca-file="$p/ca.crt" \
		--requestheader-client-ca-file="$p/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
		--requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
		--requestheader-extra-headers-prefix=X-Remote-Extra- \
		--proxy-client-cert-file="$p/front-proxy-client.crt" --proxy-client-key-file="$p/front-proxy-client.key" \
		--authorization-mode=Node,RBAC --anonymous-auth=true \
		--service-account-issuer="https://127.0.0.1:$API_PORT" \
		--service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
		--service-cluster-ip-range=10.96.0.0/16 --allow-privileged=true --profiling=false \
		--shutdown-watch-termination-grace-period=2s \
		--kubelet-client-certificate="$p/apiserver-kubelet-client.crt" \
		--kubelet-client-key="$p/apiserver-kubelet-client.key" \
		--kubelet-certificate-authority="$p/ca.crt" \
		--kubelet-preferred-address-types=InternalIP \
		--enable-aggregator-routing=true \
		--admission-control-config-file="$p/admission.yaml"
	wait_until "kube-apiserver /readyz" "$KUBECTL" --kubeconfig "$STATE/kubeconfig" get --raw /readyz

	start kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
		--kubeconfig="$p/kube-controller-manager.kubeconfig" \
		--authentication-kubeconfig="$p/kube-controller-manager.kubeconfig" \
		--authorization-kubeconfig="$p/kube-controller-manager.kubeconfig" \
		--bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$p/kcm" --leader-elect=false \
		--cluster-name=archwarden-local \
		--service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
		--controllers='*' --profiling=false
	start kube-scheduler "$KUBE_BIN/kube-scheduler" \
		--kubeconfig="$p/kube-scheduler.kubeconfig" \
		--authentication-kubeconfig="$p/kube-scheduler.kubeconfig" \
		--authorization-kubeconfig="$p/kube-scheduler.kubeconfig" \
		--bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --cert-dir="$p/scheduler" \
		--leader-elect=false --profiling=false
	start kwok "$KWOK_BIN/kwok" --kubeconfig="$p/kwok.kubeconfig" --config="$KWOK_BIN/stages.yaml" \
		--manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
		--manage-nodes-with-label-selector= --manage-single-node= \
		--cidr=10.244.0.0/16 --node-ip=10.0.0.1 --node-lease-duration-seconds=40 \
		--server-address="127.0.0.1:$KWOK_PORT"

	wait_until "kube-controller-manager /healthz" curl -fsSk "https://127.0.0.1:$KCM_PORT/healthz"
	wait_until "kube-scheduler /healthz" curl -fsSk "https://127.0.0.1:$SCHED_PORT/healthz"
	wait_until "kwok /healthz" curl -fsS "http://127.0.0.1:$KWOK_PORT/healthz"

	NODES=${ARCHWARDEN_CLUSTER_NODES:-$CLUSTER_HERE/nodes.yaml}
	"$KUBECTL" --kubeconfig "$STATE/kubeconfig" create -f "$NODES" >/dev/null
	EXPECTED_NODES=$("$KUBECTL" --kubeconfig "$STATE/kubeconfig" create --dry-run=client -o name -f "$NODES" | wc -l)
	wait_until "$EXPECTED_NODES nodes Ready and untainted" nodes_ready
	wait_until "namespace default" "$KUBECTL" --kubeconfig "$STATE/kubeconfig" get namespace default
	wait_until "serviceaccount default/default" "$KUBECTL" --kubeconfig "$STATE/kubeconfig" -n default get serviceaccount default
	if node_enabled; then
		node_up
	fi

	trap - ERR
	cat >"$STATE/env" <<EOF
export KUBECONFIG=$STATE/kubeconfig
export PATH=$STATE/bin:\$PATH
EOF
	local t1
	t1=$(date +%s.%N)
	awk -v t0="$T0" -v tb="$tb" -v t1="$t1" -v port="$API_PORT" 'BEGIN {
		printf "up.sh: cluster ready in %.1fs (%.1fs after the build check); API https://127.0.0.1:%s\n", t1 - t0, t1 - tb, port }'

	echo "up.sh: export KUBECONFIG=$STATE/kubeconfig PATH=$STATE/bin:\$PATH   (or: . $STATE/env)"
}

on_error() {
	echo "up.sh: failed at line $1" >&2
	log_tails 40 >&2
	[ "${ARCHWARDEN_KEEP_FAILED:-0}" = 1 ] || "$CLUSTER_HERE/down.sh" --quiet
	exit 1
}

fail() {
	echo "up.sh: $*" >&2
	log_tails 40 >&2
	[ "${ARCHWARDEN_KEEP_FAILED:-0}" = 1 ] || "$CLUSTER_HERE/down.sh" --quiet
	exit 1
}

# start <name> <binary> <args...>: own session and process group (pid == pgid), output to the
# component log, stdin from /dev/null (so callers capturing our output never wait on daemons),
# and without the state lock's fd 9.
start() {
	local name=$1
	shift
	start_as "$name" "$1" "$@"
}

# start_as <name> <binary> <command...>: like start, for a command that ends by exec'ing <binary>
# (a wrapper that prepares a namespace first).
start_as() {
	local name=$1 bin=$2
	shift 2
	setsid "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null 9>&- &
	local pid=$!
	echo "$pid $bin" >"$STATE/pids/$name"
	# Until the forked shell has exec'ed the binary, /proc/<pid>/exe is bash or setsid.
	for _ in $(seq 50); do
		[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$bin" ] && return 0
		[ -d "/proc/$pid" ] || break
		sleep 0.05
	done
	pid_alive "$name" || fail "$name did not start"
}

# wait_until <description> <command...>: bounded poll; fails fast if a component died.
wait_until() {
	local desc=$1 deadline=$((SECONDS + TIMEOUT)) c
	shift
	until "$@" >/dev/null 2>&1; do
		for c in $COMPONENTS; do
			if [ -f "$STATE/pids/$c" ] && ! pid_alive "$c"; then
				fail "$c exited while waiting for $desc"
			fi
		done
		[ "$SECONDS" -lt "$deadline" ] || fail "timed out after ${TIMEOUT}s waiting for $desc"
		sleep 0.2
	done
}

nodes_ready() {
	local ready
	ready=$("$KUBECTL" --kubeconfig "$STATE/kubeconfig" get nodes -o \
		jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{" "}{.spec.taints}{"\n"}{end}' |
		awk '$1 == "True" && NF == 1' | wc -l)
	[ "$ready" -ge "$EXPECTED_NODES" ]
}

# Random free ports on 127.0.0.1 below the usual ephemeral range (32768+), so outgoing
# connections cannot grab them between picking and binding.
pick_ports() {
	local ports
	ports=$(python3 - <<'PY'
import random, socket
ports = []
while len(ports) < 10:
    p = random.randint(20000, 32000)
    if p in ports:
        continue
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            continue
    ports.append(p)
print(" ".join(map(str, ports)))
PY
	)
	read -r ETCD_PORT ETCD_PEER_PORT API_PORT KCM_PORT SCHED_PORT KWOK_PORT \
		KUBELET_PORT KUBELET_HEALTHZ_PORT REGISTRY_PORT NODE_CREDENTIALS_PORT <<<"$ports"
	cat >"$STATE/ports.env" <<EOF
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
API_PORT=$API_PORT
KCM_PORT=$KCM_PORT
SCHED_PORT=$SCHED_PORT
KWOK_PORT=$KWOK_PORT
KUBELET_PORT=$KUBELET_PORT
KUBELET_HEALTHZ_PORT=$KUBELET_HEALTHZ_PORT
REGISTRY_PORT=$REGISTRY_PORT
NODE_CREDENTIALS_PORT=$NODE_CREDENTIALS_PORT
EOF
}

# Fresh throw-away PKI (openssl, ECDSA P-256, valid 7 days): one CA that signs the apiserver
# serving certificate and the client certificates, a front-proxy CA, and an RSA key pair for
# service-account tokens.
make_pki() {
	local p=$STATE/pki
	rm -rf "$p" && mkdir -p "$p/kcm" "$p/scheduler"
	cat >"$p/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = archwarden-local-ca
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost, IP:10.96.0.1, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local
authorityKeyIdentifier = keyid
[kubelet]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:10.77.0.1, DNS:archwarden-node
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
EOF
	(
		cd "$p"
		umask 077
		openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
		openssl req -x509 -new -key ca.key -config openssl.cnf -extensions ca -days 7 -out ca.crt
		issue apiserver "/CN=kube-apiserver" server
		issue admin "/O=system:masters/CN=kubernetes-admin" client
		# Test-only simplification: the components run with system:masters client certificates
		# (like envtest and kwokctl), each under its own user name.
		issue kube-controller-manager "/O=system:masters/CN=system:kube-controller-manager" client
		issue kube-scheduler "/O=system:masters/CN=system:kube-scheduler" client
		issue kwok "/O=system:masters/CN=kwok-controller" client
		# The API server's client certificate towards kubelets (logs, exec, port-forward).
		issue apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" client
		# The API server's client certificate towards admission webhooks (every one: user "*"),
		# so a webhook can tell the API server from anyone else who reaches its port.
		issue apiserver-webhook-client "/CN=kube-apiserver-webhook-client" client
		# Front-proxy (aggregation layer) CA and client, as kubeadm sets up; separate from the
		# client CA so that no ordinary client certificate can assert X-Remote-User headers.
		openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out front-proxy-ca.key 2>/dev/null
		openssl req -x509 -new -key front-proxy-ca.key -subj "/CN=archwarden-front-proxy-ca" \
			-config openssl.cnf -extensions ca -days 7 -out front-proxy-ca.crt
		CA=front-proxy-ca issue front-proxy-client "/CN=front-proxy-client" client
		openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
		openssl pkey -in sa.key -pubout -out sa.pub
		chmod 0644 ca.crt front-proxy-ca.crt
	)
	kubeconfig admin "$STATE/kubeconfig"
	admission_config
	local c
	for c in kube-controller-manager kube-scheduler kwok; do kubeconfig "$c" "$p/$c.kubeconfig"; done
	chmod 0600 "$STATE/kubeconfig" "$p"/*.kubeconfig
}

# AdmissionConfiguration: the webhook admission plugins read credentials from a kubeconfig whose
# user names are webhook host names; "*" matches every webhook.
admission_config() {
	local p=$STATE/pki plugin
	cat >"$p/webhooks.kubeconfig" <<EOF
apiVersion: v1
kind: Config
users:
- name: "*"
  user:
    client-certificate: $p/apiserver-webhook-client.crt
    client-key: $p/apiserver-webhook-client.key
EOF
	{
		echo "apiVersion: apiserver.config.k8s.io/v1"
		echo "kind: AdmissionConfiguration"
		echo "plugins:"
		for plugin in ValidatingAdmissionWebhook MutatingAdmissionWebhook; do
			cat <<EOF
- name: $plugin
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: $p/webhooks.kubeconfig
EOF
		done
	} >"$p/admission.yaml"
}

issue() { # <name> <subject> <extension section>   (run inside the pki dir)
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null
	openssl req -new -key "$1.key" -subj "$2" -config openssl.cnf -out "$1.csr"
	openssl x509 -req -in "$1.csr" -CA "${CA:-ca}.crt" -CAkey "${CA:-ca}.key" -set_serial "0x$(openssl rand -hex 16)" \
		-days 7 -extfile openssl.cnf -extensions "$3" -out "$1.crt" 2>/dev/null
	rm -f "$1.csr"
}

kubeconfig() { # <cert name> <output>
	local p=$STATE/pki
	cat >"$2" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: archwarden-local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 "$p/ca.crt")
users:
- name: $1
  user:
    client-certificate-data: $(base64 -w0 "$p/$1.crt")
    client-key-data: $(base64 -w0 "$p/$1.key")
contexts:
- name: archwarden-local
  context:
    cluster: archwarden-local
    user: $1
current-context: archwarden-local
EOF
}

main "$@"
exit $?
