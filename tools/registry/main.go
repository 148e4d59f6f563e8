// Command registry is CNCF Distribution's registry (github.com/distribution/distribution/v3),
// built from the Go module proxy for the test suite (see tools/build-registry.sh and
// testkit/registry.py), which runs it on loopback with a generated config file:
//
//	registry serve config.yml
package main

import (
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
	_ "github.com/distribution/distribution/v3/registry/auth/token"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"

	"github.com/distribution/distribution/v3/registry"
)

func main() {
	registry.RootCmd.Execute()
}
