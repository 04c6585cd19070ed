// Package harness is the bench suite's driver: it sets up each scenario of
// issue 6 in network namespaces it creates (vrouter daemons as nobody,
// containers attached with `vrouter attach`, and the baselines: kernel
// veth, standalone wireguard-go, slirp4netns, pasta), runs iperf3,
// sockperf and the suite's own load generators, and collects the figures
// into a report.Report.
//
// Everything it creates belongs to a scope and is undone when the scope
// closes, also on error and on Ctrl-C (the context): processes are
// stopped by PID, namespaces deleted (their veths, TUNs and nftables rules
// go with them). Names carry a random run id. Traffic stays on loopback
// and inside those namespaces.
package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/vrouter/vrouter/bench/loadgen"
	"github.com/vrouter/vrouter/bench/parse"
	"github.com/vrouter/vrouter/bench/report"
)

// Config says what to run and with which binaries.
type Config struct {
	Quick       bool
	RepoDir     string // the vrouter checkout: go.mod, the micro-benchmarks, git rev
	Vrouter     string // bin/vrouter
	DNSLoad     string // bench/cmd/dnsload binary
	ConnLoad    string // bench/cmd/connload binary
	FloodLoad   string // bench/cmd/floodload binary (scenario 9)
	WireGuardGo string // wireguard-go built from the module in go.mod
	Go          string // go tool, for the micro-benchmarks
	OutDir      string // bench/results
	Only        []string
	CI          bool // missing tools are errors, not skips
	Log         *slog.Logger
	// DaemonFlags are added to every `vrouter run` of the suite, STATE in
	// them replaced by the daemon's state dir (to measure features that
	// are off by default: --flow-log STATE/flows.jsonl --metrics-listen
	// 127.0.0.1:0).
	DaemonFlags []string
	// NoisyEach adds to scenario 9 one run of each flood alone, to find
	// which one hurts (a diagnostic run).
	NoisyEach bool
}

// params are the durations and counts of a quick or a full run.
type params struct {
	iperfSeconds, iperfRuns, iperfOmit int
	rrSeconds, rrRuns                  int
	loadSeconds                        time.Duration
	loadRuns                           int
	dnsConc, dnsUniqueConc, connConc   int
	gossipTrials                       int
	gossipSizes                        []int
	ports                              int
	rssSettle                          time.Duration // idle time after the attaches, for the settled RSS
	benchtime                          string
	benchCount                         int
}

func paramsFor(quick bool) params {
	if quick {
		return params{
			iperfSeconds: 1, iperfRuns: 1,
			rrSeconds: 2, rrRuns: 1, // sockperf spends 0.4 s warming up
			loadSeconds: time.Second, loadRuns: 1,
			dnsConc: 16, dnsUniqueConc: 16, connConc: 4,
			gossipTrials: 3, gossipSizes: []int{3, 10, 30},
			ports:     100,
			benchtime: "200x", benchCount: 1,
		}
	}
	return params{
		iperfSeconds: 10, iperfRuns: 3, iperfOmit: 1,
		rrSeconds: 5, rrRuns: 3,
		loadSeconds: 5 * time.Second, loadRuns: 3,
		dnsConc: 16, dnsUniqueConc: 16, connConc: 4,
		gossipTrials: 15, gossipSizes: []int{3, 10, 30, 100},
		ports: 1022, rssSettle: 150 * time.Second,
		benchtime: "1s", benchCount: 6,
	}
}

// Suite is one run.
type Suite struct {
	cfg   Config
	p     params
	log   *slog.Logger
	runID string
	stamp string // file name stem of this run's results
	work  string // temp dir: the daemon binary copy, state dirs, keys
	bin   string // vrouter copy the daemon user can execute
	uid   int    // of the daemon user
	gid   int
	root  bool
	// prepErr is why the privileged set-up failed, if it did.
	prepErr error

	upstream *loadgen.Upstream
	micro    []parse.Bench // the Go micro-benchmark results, read by scenario 8
	rep      *report.Report
	nsSeq    int
}

// The daemon under test runs without any privilege, as this user.
const (
	daemonUser  = "nobody"
	daemonGroup = "nogroup"
)

type scenario struct {
	id, title string
	run       func(ctx context.Context, sc *scope, out *report.Scenario) error
}

func (s *Suite) scenarios() []scenario {
	return []scenario{
		{"micro", "Go micro-benchmarks", s.scenMicro},
		{"1", "same-node PN", s.scenSameNode},
		{"2", "cross-node PN (two daemons on loopback)", s.scenCrossNode},
		{"3", "node egress to a loopback server", s.scenNodeEgress},
		{"4", "dedicated egress through a gateway", s.scenDedicatedEgress},
		{"5", "DNS from a container", s.scenDNS},
		{"6", "gossip: new record visible on all N nodes (in-process)", s.scenGossip},
		{"7", "failover", s.scenFailover},
		{"8", "resources", s.scenResources},
		{"9", "noisy neighbour: one container floods, another measures", s.scenNoisy},
		{"10", "restart: kill -9 and upgrade of the worker", s.scenRestart},
	}
}

// Run runs the scenarios, writes the JSON, the SVG and the micro-benchmark
// output into cfg.OutDir and returns the report. The error is about the
// run itself (no output dir, interrupted); failed scenarios are in the
// report (Report.Failed).
func Run(ctx context.Context, cfg Config) (*report.Report, error) {
	s := &Suite{cfg: cfg, p: paramsFor(cfg.Quick), log: cfg.Log}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	s.runID = hex.EncodeToString(b)
	started := time.Now()
	s.stamp = started.UTC().Format("20060102T150405Z")
	mode := "full"
	if cfg.Quick {
		mode = "quick"
	}
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("results dir: %w", err)
	}
	s.rep = &report.Report{
		Format: report.Format, RunID: s.runID, Mode: mode, Started: started,
		Machine: machine(), MTUs: map[string]int{}, Files: map[string]string{},
	}
	s.rep.Versions = s.versions(ctx)
	s.log.Info("bench run", "id", s.runID, "mode", mode, "machine", s.rep.Machine.Line())

	global := newScope("suite", s.log)
	s.prepErr = s.prepare(ctx, global)
	if s.prepErr != nil {
		s.log.Warn("privileged scenarios cannot run", "err", s.prepErr)
	}
	for _, sn := range s.scenarios() {
		if len(cfg.Only) > 0 && !slices.Contains(cfg.Only, sn.id) {
			continue
		}
		out := report.Scenario{ID: sn.id, Title: sn.title}
		t0 := time.Now()
		switch {
		case ctx.Err() != nil:
			out.Skipped = "interrupted"
		default:
			s.log.Info("scenario", "id", sn.id, "title", sn.title)
			sc := newScope("scenario "+sn.id, s.log)
			err := sn.run(ctx, sc, &out)
			if cerr := sc.close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("cleanup: %w", cerr))
			}
			if err != nil {
				var sk skipError
				if errors.As(err, &sk) {
					out.Skipped = sk.why
				} else {
					out.Error = err.Error()
				}
			}
		}
		out.Seconds = time.Since(t0).Seconds()
		s.rep.Scenarios = append(s.rep.Scenarios, out)
	}
	cleanupErr := global.close()
	s.rep.Seconds = time.Since(started).Seconds()
	s.rep.Machine.LoadAvgEnd = machine().LoadAvg
	s.rep.Finish()
	if err := s.writeOutputs(); err != nil {
		return s.rep, err
	}
	if cleanupErr != nil {
		return s.rep, fmt.Errorf("cleanup: %w", cleanupErr)
	}
	if ctx.Err() != nil {
		return s.rep, fmt.Errorf("interrupted: %w", ctx.Err())
	}
	return s.rep, nil
}

func (s *Suite) writeOutputs() error {
	base := filepath.Join(s.cfg.OutDir, s.stamp)
	s.rep.Files["json"] = base + ".json"
	s.rep.Files["svg"] = base + ".svg"
	if err := s.rep.WriteJSON(base + ".json"); err != nil {
		return err
	}
	f, err := os.Create(base + ".svg")
	if err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	if err := errors.Join(s.rep.WriteSVG(f), f.Close()); err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	return nil
}

// skipError marks a scenario (or a figure) that cannot run here, and why.
type skipError struct{ why string }

func (e skipError) Error() string { return "skipped: " + e.why }

func skipf(format string, args ...any) error { return skipError{fmt.Sprintf(format, args...)} }

// prepare does what every privileged scenario needs: root, the daemon
// user, a copy of the binary that user can run, the fake DNS upstream.
// Without it those scenarios skip (or fail under CI).
func (s *Suite) prepare(ctx context.Context, global *scope) error {
	s.root = os.Geteuid() == 0
	if !s.root {
		return errors.New("not root: network namespaces, TUNs and setpriv need root")
	}
	u, err := user.Lookup(daemonUser)
	if err != nil {
		return fmt.Errorf("daemon user: %w", err)
	}
	g, err := user.LookupGroup(daemonGroup)
	if err != nil {
		return fmt.Errorf("daemon group: %w", err)
	}
	if s.uid, err = strconv.Atoi(u.Uid); err != nil {
		return fmt.Errorf("uid of %s: %w", daemonUser, err)
	}
	if s.gid, err = strconv.Atoi(g.Gid); err != nil {
		return fmt.Errorf("gid of %s: %w", daemonGroup, err)
	}
	s.work, err = os.MkdirTemp("", "vrbench-"+s.runID+"-")
	if err != nil {
		return fmt.Errorf("work dir: %w", err)
	}
	global.add("remove "+s.work, func() error { return os.RemoveAll(s.work) })
	// The checkout may sit where nobody cannot traverse: the daemon runs
	// from a world-readable copy.
	if err := os.Chmod(s.work, 0o755); err != nil {
		return fmt.Errorf("work dir: %w", err)
	}
	s.bin = filepath.Join(s.work, "vrouter")
	if err := copyFile(s.cfg.Vrouter, s.bin, 0o755); err != nil {
		return fmt.Errorf("copy vrouter binary: %w", err)
	}
	s.upstream, err = loadgen.StartUpstream(netip.MustParseAddr("198.51.100.7"), 300)
	if err != nil {
		return err
	}
	global.add("stop the fake DNS upstream", s.upstream.Close)
	return nil
}

// needRoot is the first check of every privileged scenario.
func (s *Suite) needRoot() error {
	if s.bin != "" && s.upstream != nil {
		return nil
	}
	if !s.root {
		if s.cfg.CI {
			return errors.New("CI=true and not root: the suite needs root")
		}
		return skipf("needs root")
	}
	return fmt.Errorf("set-up failed: %w", s.prepErr)
}

func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		return err
	}
	return os.Chmod(dst, mode) // the umask may have narrowed it
}
