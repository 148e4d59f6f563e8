// Command pstest serves Google's in-memory fake Pub/Sub server
// (cloud.google.com/go/pubsub/v2/pstest) on a loopback port, for the test
// suite when the Cloud SDK's Java emulator is not installed
// (see tools/build-pstest.sh and tests/support/pubsub_emulator.py).
//
//	pstest --port 8085
//
// It prints "pstest: listening on HOST:PORT" on stdout once the gRPC server
// is accepting connections, and runs until SIGTERM or SIGINT.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"cloud.google.com/go/pubsub/v2/pstest"
)

func main() {
	port := flag.Int("port", 8085, "TCP port to listen on (0 picks a free one)")
	flag.Parse()

	// NewServerWithPort listens on localhost:<port> and serves in the background.
	srv := pstest.NewServerWithPort(*port)
	fmt.Printf("pstest: listening on %s\n", srv.Addr)
	_ = os.Stdout.Sync()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	s := <-sig
	log.Printf("pstest: %v, shutting down", s)
	if err := srv.Close(); err != nil {
		log.Printf("pstest: close: %v", err)
	}
}
