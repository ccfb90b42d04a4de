// Command etcd is the etcd 3.6 server, built from go.etcd.io/etcd/server/v3 v3.6.16 for the interop
// tier (tests/interop/run), the same code path as the release binary's server side.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
