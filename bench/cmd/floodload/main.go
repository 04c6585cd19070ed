// Command floodload is the noisy neighbour of bench scenario 9: run inside
// a container's namespace (`ip netns exec`), it floods the node's egress
// with ordinary sockets until its duration ends or SIGTERM, then prints one
// JSON object (loadgen.FloodResult).
//
//	floodload -mode tcp-hold -addr 127.0.0.1:40000 -conns 2048 -c 64 -d 60s
//	floodload -mode udp-ports -addr 127.0.0.1:21000 -ports 2048 -pps 20000 -d 60s
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
	cfg := loadgen.FloodConfig{}
	flag.StringVar(&cfg.Mode, "mode", "", "tcp-hold (connections to a sink that never reads) or udp-ports (datagrams to consecutive ports)")
	flag.StringVar(&cfg.Addr, "addr", "", "sink IP:PORT (udp-ports: the first port)")
	flag.IntVar(&cfg.Conns, "conns", 1024, "tcp-hold: connections to open")
	flag.IntVar(&cfg.Concurrency, "c", 64, "tcp-hold: dials in flight")
	flag.IntVar(&cfg.Ports, "ports", 1024, "udp-ports: consecutive ports from the one of -addr")
	flag.IntVar(&cfg.PPS, "pps", 20000, "udp-ports: datagrams per second")
	flag.DurationVar(&cfg.Duration, "d", 10*time.Second, "duration of the flood")
	flag.DurationVar(&cfg.Timeout, "timeout", 2*time.Second, "tcp-hold: per-dial timeout")
	flag.Parse()
	if cfg.Mode == "" || cfg.Addr == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "floodload: -mode and -addr are required and no arguments are taken")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := loadgen.Flood(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "floodload: %v\n", err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		fmt.Fprintf(os.Stderr, "floodload: %v\n", err)
		os.Exit(1)
	}
}
