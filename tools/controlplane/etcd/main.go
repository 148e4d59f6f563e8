// Command etcd is the upstream etcd server, built from the
// go.etcd.io/etcd/server/v3 module exactly as etcd's own main package does.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
