#!/usr/bin/env bash
# Runs inside the kubelet's own mount namespace (`unshare --mount --propagation unchanged`, so
# that the shared kubelet root still propagates volume mounts to containerd), then becomes the
# kubelet.
#
#   kubelet-ns.sh <sysctl dir> <kubelet> <args...>
#
# The kubelet writes a few kernel tunables at start-up (vm.overcommit_memory, kernel.panic, ...).
# Those are machine-wide; this machine is shared. Each file under <sysctl dir> (its path relative
# to /proc/sys) holds the value the kubelet wants and is bind-mounted over the real one here, so
# the kubelet reads its own value back and writes nothing. /proc is made private first so that
# none of these mounts can propagate to the host, whatever the host's mount propagation.
set -euo pipefail
sysctl_dir=$1
shift
mount --make-rprivate /proc
while IFS= read -r -d '' file; do
	mount --bind "$file" "/proc/sys/${file#"$sysctl_dir"/}"
done < <(find "$sysctl_dir" -type f -print0)
exec "$@"
