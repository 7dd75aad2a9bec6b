# Local multi-arch cluster (etcd + kube-apiserver + kube-controller-manager + kube-scheduler +
# kwok fake nodes), built from the Go module proxy. Included from the top-level Makefile:
#   -include hack/cluster/cluster.mk
# Paths are relative to the repository root (make's working directory).
.PHONY: cluster-build cluster-up cluster-down cluster-status

cluster-build:
	hack/cluster/build.sh

cluster-up:
	hack/cluster/up.sh

cluster-down:
	hack/cluster/down.sh

cluster-status:
	hack/cluster/status.sh
