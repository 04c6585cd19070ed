package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"time"

	"github.com/vrouter/vrouter/bench/loadgen"
	"github.com/vrouter/vrouter/bench/parse"
	"github.com/vrouter/vrouter/bench/report"
	"github.com/vrouter/vrouter/bench/stats"
)

// path is one way from a client to a server: vrouter or a baseline. A path
// whose set-up failed or cannot exist here carries err or skip, and every
// figure measured on it says so.
type path struct {
	name   string
	mtu    int
	client *netns
	server *netns // nil: the host's namespace
	dst    string // the server's address as the client reaches it
	bind   string // address the server binds ("" = all)
	fwd    []int  // PIDs of the forwarder processes (none for kernel paths)
	err    error
	skip   string
}

// failed makes a path that could not be set up.
func failedPath(name string, mtu int, err error) *path {
	p := &path{name: name, mtu: mtu}
	var sk skipError
	if errors.As(err, &sk) {
		p.skip = sk.why
	} else {
		p.err = err
	}
	return p
}

func (p *path) usable() bool { return p.err == nil && p.skip == "" }

// sample is one run's figures by key ("gbps", "p99", …).
type sample map[string]float64

type measureFn func(ctx context.Context, sc *scope, p *path) (sample, error)

// results holds every run of one measurement on several paths.
type results struct {
	paths   []*path
	samples []map[string][]float64
	errs    []error
}

// compare runs m runs times on every usable path, alternating between the
// paths run by run, so that a slow spell of a shared machine hits all of
// them rather than one. A path's first failure ends its runs.
func (s *Suite) compare(ctx context.Context, sc *scope, runs int, m measureFn, paths ...*path) *results {
	r := &results{paths: paths, samples: make([]map[string][]float64, len(paths)), errs: make([]error, len(paths))}
	for i := range paths {
		r.samples[i] = make(map[string][]float64)
	}
	for range runs {
		for i, p := range paths {
			if !p.usable() || r.errs[i] != nil {
				continue
			}
			if err := ctx.Err(); err != nil {
				r.errs[i] = err
				continue
			}
			smp, err := m(ctx, sc, p)
			if err != nil {
				s.log.Warn("measurement failed", "path", p.name, "err", err)
				r.errs[i] = err
				continue
			}
			for k, v := range smp {
				r.samples[i][k] = append(r.samples[i][k], v)
			}
		}
	}
	return r
}

// figure is path i's median of key, with the medians of details.
func (r *results) figure(i int, key string, details ...string) report.Figure {
	p := r.paths[i]
	f := report.Figure{Name: p.name, MTU: p.mtu}
	switch {
	case p.skip != "":
		f.Skipped = p.skip
	case p.err != nil:
		f.Error = p.err.Error()
	case r.errs[i] != nil:
		f.Error = r.errs[i].Error()
	default:
		f.Samples = r.samples[i][key]
		if len(f.Samples) == 0 {
			f.Skipped = "not measured on this path"
			return f
		}
		f.Value = stats.Median(f.Samples)
		for _, d := range details {
			if v := r.samples[i][d]; len(v) > 0 {
				if f.Detail == nil {
					f.Detail = make(map[string]float64)
				}
				f.Detail[d] = stats.Median(v)
			}
		}
	}
	return f
}

func ptr(f report.Figure) *report.Figure { return &f }

// startServer starts args (a server program) in the path's server
// namespace and waits until it listens on TCP port.
func (s *Suite) startServer(ctx context.Context, sc *scope, p *path, name string, port int, args ...string) (*proc, error) {
	srv, err := s.startProc(sc, name, p.server.cmd(args...), nil)
	if err != nil {
		return nil, err
	}
	if err := s.waitListening(ctx, p.server, "t", port, srv); err != nil {
		_ = srv.stop(5 * time.Second)
		return nil, err
	}
	return srv, nil
}

// iperf runs one iperf3 test (server -1 in the server namespace, client in
// the client's) and returns its report and the forwarders' CPU in cores.
func (s *Suite) iperf(ctx context.Context, sc *scope, p *path, extra ...string) (parse.Iperf, sample, error) {
	port, err := freePort()
	if err != nil {
		return parse.Iperf{}, nil, err
	}
	srvArgs := []string{"iperf3", "-s", "-1", "-p", strconv.Itoa(port)}
	if p.bind != "" {
		srvArgs = append(srvArgs, "-B", p.bind)
	}
	srv, err := s.startServer(ctx, sc, p, "iperf3 server", port, srvArgs...)
	if err != nil {
		return parse.Iperf{}, nil, err
	}
	defer srv.stop(5 * time.Second)
	args := []string{"iperf3", "-c", p.dst, "-p", strconv.Itoa(port), "-J", "--connect-timeout", "5000",
		"-t", strconv.Itoa(s.p.iperfSeconds)}
	if s.p.iperfOmit > 0 {
		args = append(args, "-O", strconv.Itoa(s.p.iperfOmit))
	}
	args = append(args, extra...)
	meter := startCPU(p.fwd)
	timeout := time.Duration(s.p.iperfSeconds+s.p.iperfOmit+30) * time.Second
	out, runErr := s.run(ctx, timeout, p.client.cmd(args...), nil)
	smp := sample{}
	if c, ok := meter.cores(); ok {
		smp["forwarder_cores"] = c
	}
	r, err := parse.ParseIperf(out)
	if err != nil {
		return parse.Iperf{}, nil, errors.Join(err, runErr)
	}
	smp["endpoint_cores"] = (r.HostCPU + r.RemoteCPU) / 100
	return r, smp, nil
}

// measureTCP is iperf3 TCP with the given number of streams: Gbit/s
// received, retransmits and CPU.
func (s *Suite) measureTCP(streams int) measureFn {
	return func(ctx context.Context, sc *scope, p *path) (sample, error) {
		r, smp, err := s.iperf(ctx, sc, p, "-P", strconv.Itoa(streams))
		if err != nil {
			return nil, err
		}
		gbps := r.ReceivedBps / 1e9
		smp["gbps"] = gbps
		smp["retransmits"] = float64(r.Retransmits)
		if gbps > 0 {
			smp["cpu_cores_per_gbit"] = (smp["endpoint_cores"] + smp["forwarder_cores"]) / gbps
		}
		return smp, nil
	}
}

// measureTCPDown is one TCP stream from the server to the client (iperf3
// -R): for egress paths, a download into the container.
func (s *Suite) measureTCPDown(ctx context.Context, sc *scope, p *path) (sample, error) {
	r, smp, err := s.iperf(ctx, sc, p, "-R")
	if err != nil {
		return nil, err
	}
	gbps := r.ReceivedBps / 1e9
	smp["gbps"] = gbps
	if gbps > 0 {
		smp["cpu_cores_per_gbit"] = (smp["endpoint_cores"] + smp["forwarder_cores"]) / gbps
	}
	return smp, nil
}

// measureUDP64 is iperf3 UDP with 64-byte datagrams, unlimited rate:
// thousands of packets per second received, and the loss.
func (s *Suite) measureUDP64(ctx context.Context, sc *scope, p *path) (sample, error) {
	r, smp, err := s.iperf(ctx, sc, p, "-u", "-l", "64", "-b", "0")
	if err != nil {
		return nil, err
	}
	smp["kpps"] = r.ReceivedPPS / 1e3
	smp["loss_percent"] = r.LostPercent
	if r.Seconds > 0 {
		smp["sent_kpps"] = float64(r.Packets) / r.Seconds / 1e3
	}
	return smp, nil
}

// measureRR is sockperf ping-pong over TCP: round-trip times in µs.
func (s *Suite) measureRR(ctx context.Context, sc *scope, p *path) (sample, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	srv, err := s.startServer(ctx, sc, p, "sockperf server", port, "sockperf", "server", "--tcp", "-i", p.dst, "-p", strconv.Itoa(port))
	if err != nil {
		return nil, err
	}
	defer srv.stop(5 * time.Second)
	args := []string{"sockperf", "ping-pong", "--tcp", "-i", p.dst, "-p", strconv.Itoa(port), "-t", strconv.Itoa(s.p.rrSeconds), "--full-rtt"}
	out, err := s.run(ctx, time.Duration(s.p.rrSeconds+30)*time.Second, p.client.cmd(args...), func(c *exec.Cmd) { c.Stderr = c.Stdout })
	if err != nil {
		return nil, err
	}
	r, err := parse.ParseSockperf(out)
	if err != nil {
		return nil, fmt.Errorf("sockperf: %w: %s", err, lastLines(string(out), 3))
	}
	p50, ok50 := r.P(50)
	p99, ok99 := r.P(99)
	if !ok50 || !ok99 {
		return nil, fmt.Errorf("sockperf printed no p50/p99: %s", lastLines(string(out), 5))
	}
	return sample{"p50_us": p50, "p99_us": p99, "avg_us": r.Avg}, nil
}

// measureConnRate runs connload in the client namespace against a
// one-byte server the driver runs on the host's 127.0.0.1 (reached by the
// client at p.dst).
func (s *Suite) measureConnRate(ctx context.Context, sc *scope, p *path) (sample, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("connection server: %w", err)
	}
	srv := loadgen.ServeOneByte(ln)
	defer srv.Close()
	addr := net.JoinHostPort(p.dst, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	var r loadgen.Result
	meter := startCPU(p.fwd)
	err = s.runJSON(ctx, p.client, &r, s.cfg.ConnLoad, "-addr", addr, "-c", strconv.Itoa(s.p.connConc),
		"-d", s.p.loadSeconds.String())
	if err != nil {
		return nil, err
	}
	if r.Completed == 0 {
		return nil, fmt.Errorf("no connection completed to %s (%d sent, %d timeouts, %d errors: %s)", addr, r.Sent, r.Timeouts, r.Errors, r.FirstError)
	}
	smp := sample{"conn_per_s": r.PerSecond, "p50_us": r.LatencyUS.P50, "p99_us": r.LatencyUS.P99,
		"failed": float64(r.Timeouts + r.Errors)}
	if c, ok := meter.cores(); ok {
		smp["forwarder_cores"] = c
	}
	return smp, nil
}

// runJSON runs a bench tool in ns and decodes its JSON output into v.
func (s *Suite) runJSON(ctx context.Context, ns *netns, v any, args ...string) error {
	out, err := s.run(ctx, s.p.loadSeconds+60*time.Second, ns.cmd(args...), nil)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("%s: decode output: %w", args[0], err)
	}
	return nil
}
