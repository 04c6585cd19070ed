// Command vrbench runs the vrouter bench suite (bench/README.md): every
// scenario of issue 6 on this machine, each vrouter figure beside its
// baseline measured in the same run. It prints the table and writes
// bench/results/<timestamp>.json, .svg and -micro.txt. Linux, root.
//
//	make bench            # full run (about 20 minutes on 2 cores)
//	make bench QUICK=1    # every scenario briefly: proves the suite runs
//	bin/vrbench -quick -only 1,5
//
// Ctrl-C stops the run and removes everything it created. With CI=true a
// missing tool is an error instead of a skip. The exit status is 1 when a
// scenario or a figure failed (skips do not count).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vrouter/vrouter/bench/harness"
)

func main() {
	os.Exit(run())
}

func run() int {
	cfg := harness.Config{}
	flag.BoolVar(&cfg.Quick, "quick", false, "run each scenario briefly (seconds): proves the suite runs, judges nothing")
	flag.StringVar(&cfg.RepoDir, "repo", ".", "the vrouter checkout (go.mod, micro-benchmarks)")
	flag.StringVar(&cfg.Vrouter, "vrouter", "bin/vrouter", "vrouter binary under test")
	flag.StringVar(&cfg.DNSLoad, "dnsload", "bin/dnsload", "DNS load generator (bench/cmd/dnsload)")
	flag.StringVar(&cfg.ConnLoad, "connload", "bin/connload", "TCP connection-rate generator (bench/cmd/connload)")
	flag.StringVar(&cfg.FloodLoad, "floodload", "bin/floodload", "the noisy neighbour's floods (bench/cmd/floodload, scenario 9)")
	flag.BoolVar(&cfg.NoisyEach, "noisy-each", false, "scenario 9: also measure with each flood alone (diagnostic)")
	flag.StringVar(&cfg.WireGuardGo, "wireguard-go", "bin/wireguard-go", "wireguard-go built from the module in go.mod")
	flag.StringVar(&cfg.Go, "go", defaultGo(), "go tool for the micro-benchmarks")
	flag.StringVar(&cfg.OutDir, "out", "bench/results", "directory for the JSON, SVG and micro-benchmark output")
	only := flag.String("only", "", "comma-separated scenarios to run (micro,1,2,…,10); default all")
	verbose := flag.Bool("v", false, "debug logging (every process started)")
	daemonFlags := flag.String("daemon-flags", "", "flags added to every vrouter run, space-separated; STATE is the daemon's state dir")
	flag.Parse()
	cfg.DaemonFlags = strings.Fields(*daemonFlags)
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "vrbench: no arguments taken, got %q\n", flag.Args())
		return 2
	}
	if *only != "" {
		cfg.Only = strings.Split(*only, ",")
	}
	cfg.CI = os.Getenv("CI") == "true"
	for _, p := range []*string{&cfg.RepoDir, &cfg.Vrouter, &cfg.DNSLoad, &cfg.ConnLoad, &cfg.WireGuardGo, &cfg.OutDir} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			fmt.Fprintf(os.Stderr, "vrbench: %v\n", err)
			return 2
		}
		*p = abs
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	// The first Ctrl-C cancels the run; the scopes then remove everything.
	// Later ones are swallowed so that the clean-up is not cut short.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	rep, err := harness.Run(ctx, cfg)
	if rep != nil {
		if werr := rep.WriteTable(os.Stdout); werr != nil {
			fmt.Fprintf(os.Stderr, "vrbench: %v\n", werr)
		}
		fmt.Println()
		for _, kind := range []string{"json", "svg", "micro"} {
			if f, ok := rep.Files[kind]; ok {
				fmt.Printf("%s: %s\n", kind, f)
			}
		}
	}
	code := 0
	if err != nil {
		fmt.Fprintf(os.Stderr, "vrbench: %v\n", err)
		code = 1
	}
	if rep != nil {
		if failed := rep.Failed(); len(failed) > 0 {
			fmt.Fprintf(os.Stderr, "vrbench: %d failures:\n  %s\n", len(failed), strings.Join(failed, "\n  "))
			code = 1
		}
	}
	return code
}

// defaultGo is $GO, else go on PATH, else the toolchain's usual place.
func defaultGo() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}
