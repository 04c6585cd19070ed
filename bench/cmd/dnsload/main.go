// Command dnsload is the bench suite's DNS load generator: concurrent UDP
// clients, one query in flight each, for a fixed time; it prints one JSON
// object (loadgen.Result) with the rate of answered queries, their latency
// percentiles and histogram, and the rcodes. The suite runs it inside a
// container's namespace with `ip netns exec`.
//
//	dnsload -server 169.254.20.10:53 -name 1.web.APP.PN.private-network.internal. -c 16 -d 5s
//	dnsload -server 169.254.20.10:53 -name bench.test. -unique   (a new name per query: no cache hits)
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

	mdns "github.com/miekg/dns"

	"github.com/vrouter/vrouter/bench/loadgen"
)

func main() {
	cfg := loadgen.DNSConfig{}
	flag.StringVar(&cfg.Server, "server", "169.254.20.10:53", "resolver IP:PORT (UDP)")
	flag.StringVar(&cfg.Name, "name", "", "name to query (required)")
	flag.BoolVar(&cfg.Unique, "unique", false, "prepend a label that is new for every query, so no cache answers it")
	qtype := flag.String("type", "A", "query type")
	flag.IntVar(&cfg.Concurrency, "c", 16, "concurrent clients, one socket and one query in flight each")
	flag.DurationVar(&cfg.Duration, "d", 5*time.Second, "duration of the run")
	flag.DurationVar(&cfg.Timeout, "timeout", 2*time.Second, "per-query timeout")
	flag.Parse()
	if cfg.Name == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "dnsload: -name is required and no arguments are taken")
		os.Exit(2)
	}
	t, ok := mdns.StringToType[*qtype]
	if !ok {
		fmt.Fprintf(os.Stderr, "dnsload: unknown query type %q\n", *qtype)
		os.Exit(2)
	}
	cfg.Type = t
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := loadgen.DNS(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "dnsload: %v\n", err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		fmt.Fprintf(os.Stderr, "dnsload: %v\n", err)
		os.Exit(1)
	}
}
