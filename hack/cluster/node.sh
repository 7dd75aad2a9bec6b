# The real node beside the kwok nodes, and the cluster's registry. Sourced by up.sh and down.sh.
# shellcheck shell=bash
#
# One kubelet (built from the same wrapper module as the control plane) with containerd 2.x,
# Debian's runc and CNI bridge/host-local plugins. Everything is chosen so that the machine is left
# as it was (see docs/cluster.md, "The real node"):
# - a bridge of our own ($NODE_BRIDGE, $POD_SUBNET) with no forwarding, no masquerade and no
#   iptables rules: pods reach the host's bridge address and each other, nothing else;
# - the `kubernetes` Service IP ($SERVICE_IP) is a second address on the bridge, relayed by socat
#   to the API server on 127.0.0.1 (there is no kube-proxy); pods get a route to the Service
#   range through the bridge;
# - the registry listens on the bridge address, so the host, containerd and pods all reach it
#   under the same host:port, written to $STATE/registry;
# - the kubelet runs in a mount namespace of its own where the kernel tunables it insists on
#   writing are files that already hold its values: the machine's sysctls never change;
# - containerd reaches no registry but ours (a default hosts.toml pointing at a closed port);
# - no DNS: the node is addressed by IP, pods get an empty resolv.conf;
# - every process, mount, interface, cgroup and directory is removed by node_down.

NODE_NAME=archwarden-node
NODE_BRIDGE=awbr0
NODE_BRIDGE_MAC=02:61:77:00:00:01
NODE_IP=10.77.0.1
POD_SUBNET=10.77.0.0/16
SERVICE_IP=10.96.0.1
SERVICE_RANGE=10.96.0.0/16
NODE_TAINT_KEY=archwarden.io/real-node
# The sandbox ("pause") image: Debian's static catatonit, pushed to our registry by up.sh.
PAUSE_IMAGE=archwarden/pause:catatonit
# Host paths that containerd, the kubelet and the CNI plugins use whatever they are told. Those
# that did not exist before up.sh are recorded and removed by down.sh; the others are left alone.
NODE_FIXED_PATHS="/run/containerd /var/lib/kubelet /var/lib/cni /var/log/containers /var/log/pods"
# shellcheck disable=SC2034 # read by lib.sh, which sources this file
NODE_COMPONENTS="registry apiserver-relay containerd kubelet"
# Kernel tunables the kubelet writes at start (pkg/kubelet/cm: setupKernelTunables) and the values
# it wants; each one that differs here is shadowed inside the kubelet's mount namespace.
KUBELET_SYSCTLS="vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1
kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000"

node_enabled() { [ "${ARCHWARDEN_REAL_NODE:-1}" = 1 ]; }

# node_prereqs: the Debian packages the node needs, installed when missing (root only).
node_prereqs() {
	local missing=""
	command -v runc >/dev/null || missing="$missing runc"
	[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] || missing="$missing containernetworking-plugins"
	command -v socat >/dev/null || missing="$missing socat"
	command -v catatonit >/dev/null || missing="$missing catatonit"
	command -v docker-registry >/dev/null || missing="$missing docker-registry"
	command -v unshare >/dev/null && command -v ip >/dev/null || missing="$missing util-linux iproute2"
	[ -n "$missing" ] || return 0
	[ "$(id -u)" = 0 ] || { echo "up.sh: the real node needs root and:$missing" >&2; return 1; }
	echo "up.sh: installing$missing (Debian)" >&2
	# shellcheck disable=SC2086
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
}

# node_bridge_owner: the state directory whose bridge awbr0 is ('' when there is none; a bridge
# without our alias is reported as such).
node_bridge_owner() {
	ip link show "$NODE_BRIDGE" type bridge >/dev/null 2>&1 || return 0
	local alias
	alias=$(cat "/sys/class/net/$NODE_BRIDGE/ifalias" 2>/dev/null || true)
	case $alias in
	archwarden:?*) echo "${alias#archwarden:}" ;;
	*) echo "(no archwarden cluster: alias '$alias')" ;;
	esac
}

# node_free: the real node is one per machine; refuse before anything starts when another
# cluster's bridge is up (its down.sh must stop it), so no clean-up of ours touches it.
node_free() {
	local owner
	owner=$(node_bridge_owner)
	[ -z "$owner" ] || [ "$owner" = "$STATE" ] && return 0
	echo "up.sh: the real node's bridge $NODE_BRIDGE belongs to the cluster in $owner (one real" \
		"node per machine): stop it with ARCHWARDEN_CLUSTER_DIR=$owner hack/cluster/down.sh," \
		"or start this one with ARCHWARDEN_REAL_NODE=0" >&2
	return 1
}

# node_up: bridge, registry, relay, containerd, pause image, kubelet; waits for the node Ready.
node_up() {
	[ "$(id -u)" = 0 ] || { echo "up.sh: the real node needs root (ARCHWARDEN_REAL_NODE=0 skips it)" >&2; return 1; }
	local n=$STATE/node d
	rm -rf "$n" && mkdir -p "$n"/{certs.d/_default,cni,sysctl}
	# shellcheck disable=SC2153 # DATA is up.sh's (its mktemp directory)
	NODE_DATA=$DATA/node
	mkdir -p "$NODE_DATA"/{kubelet,containerd,registry,runc,cni-ipam,pod-logs}
	for d in $NODE_FIXED_PATHS; do [ -e "$d" ] || echo "$d" >>"$n/created"; done
	touch "$n/created"

	# The bridge: our addresses, no forwarding, no NAT. Its own MAC address (locally
	# administered): a bridge without one takes the lowest of its ports', so a pod's veth coming
	# or going could change it, and every pod would send to the old one (its ARP entry for the
	# host) until that entry went stale: half a minute in which no pod answered the API server.
	ip link add "$NODE_BRIDGE" address "$NODE_BRIDGE_MAC" type bridge
	# The owner, by state directory: another cluster's down.sh must not take our bridge.
	ip link set "$NODE_BRIDGE" alias "archwarden:$STATE"
	ip addr add "$NODE_IP/16" dev "$NODE_BRIDGE"
	ip addr add "$SERVICE_IP/32" dev "$NODE_BRIDGE"
	ip link set "$NODE_BRIDGE" up

	REGISTRY=$NODE_IP:$REGISTRY_PORT
	cat >"$n/registry.yml" <<EOF
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $NODE_DATA/registry}
  delete: {enabled: true}
http: {addr: "$REGISTRY", secret: "$(openssl rand -hex 16)"}
health: {storagedriver: {enabled: false}}
EOF
	start registry "$(command -v docker-registry)" serve "$n/registry.yml"
	start apiserver-relay "$(command -v socat)" \
		"TCP-LISTEN:443,bind=$SERVICE_IP,reuseaddr,fork" "TCP:127.0.0.1:$API_PORT"

	node_containerd_config "$n"
	start containerd "$CONTAINERD_BIN/containerd" --config "$n/containerd.toml"
	wait_until "registry /v2/" curl -fsS "http://$REGISTRY/v2/"
	wait_until "containerd" "$CONTAINERD_BIN/ctr" --address "$n/containerd.sock" version
	python3 "$CLUSTER_HERE/pause_image.py" "$REGISTRY" "$PAUSE_IMAGE" "$(command -v catatonit)"

	node_kubelet_config "$n"
	node_credential_providers "$n"
	# A shared bind mount: the volumes the kubelet mounts in its own namespace reach containerd.
	mount --bind "$NODE_DATA/kubelet" "$NODE_DATA/kubelet"
	mount --make-shared "$NODE_DATA/kubelet"
	local t0
	t0=$(date +%s.%N)
	start_as kubelet "$KUBELET_BIN/kubelet" unshare --mount --propagation unchanged \
		"$CLUSTER_HERE/kubelet-ns.sh" "$n/sysctl" "$KUBELET_BIN/kubelet" \
		--config="$n/kubelet.yaml" --kubeconfig="$n/kubelet.kubeconfig" \
		--root-dir="$NODE_DATA/kubelet" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
		--node-labels="$NODE_TAINT_KEY=true" \
		--image-credential-provider-config="$n/credential-providers/config.yaml" \
		--image-credential-provider-bin-dir="$n/credential-providers/bin"
	wait_until "node $NODE_NAME Ready" node_is_ready
	awk -v t0="$t0" -v t1="$(date +%s.%N)" -v r="$REGISTRY" 'BEGIN {
		printf "up.sh: real node Ready %.1fs after the kubelet started; registry %s\n", t1 - t0, r }'
	echo "$REGISTRY" >"$STATE/registry"
}

# node_credential_providers: the kubelet reads images of 127.0.0.1:$NODE_CREDENTIALS_PORT (a
# token-auth registry a test starts there) with the project's test plugin, as EKS nodes read ECR
# with ecr-credential-provider: no pull secret anywhere. The password is whatever the test writes
# to credential-providers/password; every request is logged (never the secret). archwarden runs
# the same plugin with the same config (tests/cluster/test_real_node.py).
node_credential_providers() { # <node state dir>
	local n=$1 d=$1/credential-providers
	local host=127.0.0.1:$NODE_CREDENTIALS_PORT
	mkdir -p "$d/bin"
	install -m 0755 "$CLUSTER_HERE/../credprovider/archwarden-test-credential-provider" "$d/bin/"
	: >"$d/password"
	cat >"$d/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
- name: archwarden-test-credential-provider
  apiVersion: credentialprovider.kubelet.k8s.io/v1
  matchImages: ["$host"]
  defaultCacheDuration: 10s
  args: [--username, node, --log, $d/requests.log]
  env:
  - {name: ARCHWARDEN_TEST_PROVIDER_TOKEN_FILE, value: $d/password}
EOF
	node_plain_registry "$n" "$host"
}

# node_plain_registry: containerd pulls images named <name> from http://<server> (default: the
# name itself) over plain HTTP.
node_plain_registry() { # <node state dir> <name> [server]
	local n=$1 name=$2 server=${3:-$2}
	mkdir -p "$n/certs.d/$name"
	cat >"$n/certs.d/$name/hosts.toml" <<EOF
server = "http://$server"
[host."http://$server"]
  capabilities = ["pull", "resolve"]
EOF
}

node_is_ready() {
	[ "$("$KUBECTL" --kubeconfig "$STATE/kubeconfig" get node "$NODE_NAME" \
		-o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

node_containerd_config() { # <node state dir>
	local n=$1
	cat >"$n/containerd.toml" <<EOF
version = 3
root = "$NODE_DATA/containerd/root"
state = "$NODE_DATA/containerd/state"
# NRI would open /var/run/nri; the others only log that they cannot work here.
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs"]
[grpc]
  address = "$n/containerd.sock"
[ttrpc]
  address = "$n/containerd.sock.ttrpc"
[plugins.'io.containerd.internal.v1.opt']
  path = "$NODE_DATA/containerd/opt"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '$REGISTRY/$PAUSE_IMAGE'
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = '$n/certs.d'
[plugins.'io.containerd.cri.v1.runtime']
  # root here lacks CAP_SYS_RESOURCE: the sandbox's oom_score_adj -998 made runc fail.
  restrict_oom_score_adj = true
  # Loading an AppArmor profile would be a kernel-wide change.
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '$(command -v runc)'
        Root = '$NODE_DATA/runc'
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['/usr/lib/cni']
    conf_dir = '$n/cni'
EOF
	# Our registry over plain HTTP; any other registry name goes to a closed local port, so a
	# pull of an outside image fails here instead of leaving the machine.
	node_plain_registry "$n" "$REGISTRY"
	node_plain_registry "$n" _default 127.0.0.1:9
	cat >"$n/cni/10-archwarden.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "archwarden",
  "plugins": [{
    "type": "bridge", "bridge": "$NODE_BRIDGE", "isGateway": false, "ipMasq": false,
    "hairpinMode": true,
    "ipam": {
      "type": "host-local", "dataDir": "$NODE_DATA/cni-ipam",
      "ranges": [[{"subnet": "$POD_SUBNET", "rangeStart": "10.77.1.1", "rangeEnd": "10.77.255.254",
                   "gateway": "$NODE_IP"}]],
      "routes": [{"dst": "$SERVICE_RANGE"}]
    }
  }]
}
EOF
}

node_kubelet_config() { # <node state dir>
	local n=$1 p=$STATE/pki kv key want
	(
		cd "$p" || exit 1
		umask 077
		issue "kubelet-client" "/O=system:nodes/CN=system:node:$NODE_NAME" client
		issue "kubelet-serving" "/CN=$NODE_NAME" kubelet
	)
	kubeconfig kubelet-client "$n/kubelet.kubeconfig"
	for kv in $KUBELET_SYSCTLS; do
		key=${kv%%=*} want=${kv#*=}
		[ "$(cat "/proc/sys/$key")" = "$want" ] && continue
		mkdir -p "$n/sysctl/$(dirname "$key")"
		echo "$want" >"$n/sysctl/$key"
	done
	cat >"$n/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $p/kubelet-serving.crt
tlsPrivateKeyFile: $p/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $p/ca.crt}
# Only the API server (a system:masters client certificate from the cluster CA) calls it.
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$n/containerd.sock
cgroupDriver: cgroupfs
# kubelet >= 1.35 refuses cgroup v1 unless told; this machine kind is cgroup v1 (hybrid).
failCgroupV1: false
failSwapOn: false
# No iptables rules, no DNS, no resolv.conf from the machine.
makeIPTablesUtilChains: false
resolvConf: ""
podLogsDir: $NODE_DATA/pod-logs
registerWithTaints:
- {key: $NODE_TAINT_KEY, value: "true", effect: NoSchedule}
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
staticPodPath: ""
EOF
}

# node_down: pods first (through the kubelet, so CNI tears down their network), then the
# processes, then whatever is left: shims, mounts, interfaces, cgroups, directories.
node_down() {
	local n=$STATE/node data="" c
	if [ ! -d "$n" ]; then
		# A bridge of ours without state (an interrupted up.sh) still goes; one another cluster
		# owns (its alias names another state directory) stays: the real node is one per
		# machine, and a cluster started with ARCHWARDEN_REAL_NODE=0 has none to stop.
		if [ "$(node_bridge_owner)" = "$STATE" ]; then
			ip link del "$NODE_BRIDGE"
		fi
		return 0
	fi
	[ -L "$STATE/data" ] && data=$(readlink "$STATE/data")/node
	if pid_alive kubelet && pid_alive containerd && pid_alive kube-apiserver; then
		node_drain "$n" || true
	fi
	for c in kubelet containerd apiserver-relay registry; do stop_component "$c" || true; done
	# Shims outlive containerd by design; ours are the ones pointed at our socket.
	local pids
	pids=$(pgrep -f -- "-address $n/containerd.sock" || true)
	if [ -n "$pids" ]; then
		# shellcheck disable=SC2086
		kill -KILL $pids 2>/dev/null || true
		sleep 0.3
	fi
	if [ -n "$data" ]; then
		# Deepest first; lazily, so that a busy mount cannot stop the clean-up.
		findmnt -rn -o TARGET | awk -v d="$data" 'index($0, d) == 1' | sort -r |
			while read -r m; do umount -l "$m" 2>/dev/null || true; done
	fi
	# Only our own bridge: an up.sh that failed beside another cluster has state but no bridge.
	if [ "$(node_bridge_owner)" = "$STATE" ]; then
		local veth
		for veth in $(ip -o link show master "$NODE_BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
			ip link del "$veth" 2>/dev/null || true
		done
		ip link del "$NODE_BRIDGE" 2>/dev/null || true
	fi
	node_cgroups_remove
	if [ -f "$n/created" ]; then
		# Only paths of our own list: the file is ours, but a path is deleted recursively.
		while read -r c; do
			case " $NODE_FIXED_PATHS " in *" $c "*) rm -rf "$c" ;; esac
		done <"$n/created"
	fi
	rm -rf "$n" "$STATE/registry"
}

# node_drain: force-delete the node's pods and wait (bounded) until containerd runs none of them.
node_drain() { # <node state dir>
	local n=$1 deadline=$((SECONDS + 30))
	"$STATE/bin/kubectl" --kubeconfig "$STATE/kubeconfig" --request-timeout=5s delete pods --all-namespaces --field-selector "spec.nodeName=$NODE_NAME" \
		--grace-period=0 --force --wait=false >/dev/null 2>&1 || true
	while [ "$SECONDS" -lt "$deadline" ]; do
		[ -z "$("$STATE/bin/ctr" --address "$n/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null)" ] && return 0
		sleep 0.5
	done
	return 1
}

# The kubelet's QoS and pod cgroups (cgroupfs driver) in every v1 hierarchy and in the unified
# one; only empty cgroups can be removed, which is all of ours once the processes are gone.
node_cgroups_remove() {
	local root
	for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
		[ -d "$root" ] || continue
		find "$root" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
}
