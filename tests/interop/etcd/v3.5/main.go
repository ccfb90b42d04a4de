// Command etcd is the etcd 3.5 server, built from go.etcd.io/etcd/server/v3 v3.5.35 for the interop
// tier (tests/interop/run), the same code path as the release binary's server side.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
