// Command etcd is a thin wrapper so the etcd server can be built from the Go module proxy:
// go.etcd.io/etcd/server/v3 has replace directives, so `go install ...@version` refuses it.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
