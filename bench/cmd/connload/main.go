// Command connload measures new TCP connections per second from where it
// runs (a container's namespace, through `ip netns exec`) to a server that
// answers one byte per connection (loadgen.ServeOneByte, run by the bench
// driver on loopback). Each client in turn connects, sends a byte, reads
// the answer and closes. It prints one JSON object (loadgen.Result).
//
//	connload -addr 10.0.2.2:40000 -c 4 -d 5s
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/vrouter/vrouter/bench/loadgen"
)

func main() {
	cfg := loadgen.ConnConfig{}
	flag.StringVar(&cfg.Addr, "addr", "", "server IP:PORT (required)")
	flag.IntVar(&cfg.Concurrency, "c", 4, "concurrent clients")
	flag.DurationVar(&cfg.Duration, "d", 5*time.Second, "duration of the run")
	flag.DurationVar(&cfg.Timeout, "timeout", 2*time.Second, "per-connection timeout")
	flag.Parse()
	if cfg.Addr == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "connload: -addr is required and no arguments are taken")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := loadgen.Conn(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "connload: %v\n", err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		fmt.Fprintf(os.Stderr, "connload: %v\n", err)
		os.Exit(1)
	}
}
