package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vrouter/vrouter/bench/loadgen"
	"github.com/vrouter/vrouter/bench/report"
)

// The floods of container A (network 1) in scenario 9. Each one aims at
// something container B (network 2, same node) needs too.
const (
	floodTCP  = "tcp"  // egress flow storm against a loopback sink that never reads: host sockets, flow buffers
	floodUDP  = "udp"  // UDP to thousands of loopback ports: a flow (a host socket) per port
	floodDNS  = "dns"  // new names at its resolver as fast as it answers: the forwarding slots
	floodPeer = "peer" // 64-byte UDP at unlimited rate to a container of network 1 on the other node: the overlay queue
)

var allFloods = []string{floodTCP, floodUDP, floodDNS, floodPeer}

// noisyParams are scenario 9's counts (bounded: a flood is a number of
// connections, ports and clients, and lasts one measurement).
type noisyParams struct {
	tcpConns, udpPorts, udpPPS, dnsConc, bDNSConc int
	// ramp is the time the floods get before B's measurement starts:
	// pacing of a measurement, not synchronisation.
	ramp time.Duration
}

func (s *Suite) noisyParams() noisyParams {
	if s.cfg.Quick {
		return noisyParams{tcpConns: 256, udpPorts: 256, udpPPS: 10000, dnsConc: 64, bDNSConc: 4, ramp: 500 * time.Millisecond}
	}
	return noisyParams{tcpConns: 2048, udpPorts: 2048, udpPPS: 20000, dnsConc: 256, bDNSConc: 4, ramp: 2 * time.Second}
}

// noisyEnv is scenario 9's set-up: node 1 (the daemon under test) with A
// and B, node 2 with a container of each network (A's flood peer, B's
// request/response server), the sinks of A's floods in the driver.
type noisyEnv struct {
	s        *Suite
	p        noisyParams
	n1, n2   *daemon
	a, aPeer attached
	b, bPeer attached
	resolver string
	worker   int // node 1's worker when the scenario started
	hold     *loadgen.HoldServer
	udp      *loadgen.UDPSink
	// floods says which floods run during a measurement on a path (none:
	// A idle); floor, that they run in floorNS against its own sinks.
	floods map[*path][]string
	floor  map[*path]bool
	// The CPU floor: the same generators in a namespace of their own,
	// aimed at sinks on its loopback (kernel only, no vrouter), so that a
	// flood costs B only the CPU it takes itself.
	floorNS   *netns
	floorHold *loadgen.HoldServer
	floorUDP  *loadgen.UDPSink
	floorDNS  *loadgen.Upstream

	mu sync.Mutex
	// peak RSS (KiB) and fd count of node 1's worker, by phase: "idle"
	// before the first flood, "flood" during any.
	peakRSS, peakFDs map[string]int64
	flooded          bool
	lastFlood        map[string]string // each flood's output in its last run
	budgetHeld       []float64         // budget fds held at the end of each flood run
	budgetMemMiB     []float64
}

// scenNoisy: container A of network 1 floods (flow storm, UDP port storm,
// DNS flood, small packets to a peer) while container B of network 2 on
// the same node measures; B's figures with A flooding beside the same
// figures with A idle.
func (s *Suite) scenNoisy(ctx context.Context, sc *scope, out *report.Scenario) error {
	if err := s.needRoot(); err != nil {
		return err
	}
	if err := s.needTools("ip", "ss", "setpriv", "iperf3", "sockperf"); err != nil {
		return err
	}
	if _, err := os.Stat(s.cfg.FloodLoad); err != nil {
		return fmt.Errorf("floodload binary (make bench builds it): %w", err)
	}
	if !strings.Contains(s.runFlags(ctx), "--egress-allow-loopback") {
		return skipf("node egress not built (vrouter run has no --egress-allow-loopback)")
	}
	e, err := s.noisySetup(ctx, sc)
	if err != nil {
		return err
	}
	runs := max(s.p.iperfRuns, 1)
	figures := []struct {
		metric, unit, better, chart, key, target string
		details                                  []string
		measure                                  measureFn
		path                                     func(name string) *path
		runs                                     int
		// starved is the sample of a flooded run in which B got nothing
		// through (the tool's error says so): a figure, not a failure.
		starved func(err error) sample
	}{
		{"B: TCP throughput, 1 stream, to a loopback server through node egress", "Gbit/s", "higher", "throughput", "gbps", "≥ 0.8× A idle",
			[]string{"retransmits", "forwarder_cores", "daemon_rss_mib", "daemon_fds"}, s.measureTCP(1),
			func(n string) *path {
				return &path{name: n, mtu: e.b.c.MTU, client: e.b.ns, dst: "127.0.0.1", bind: "127.0.0.1", fwd: []int{e.worker}}
			}, runs, func(error) sample { return nil }},
		{"B: TCP request/response RTT p99, to B's network on the other node", "µs", "lower", "latency", "p99_us", "≤ 2× A idle",
			[]string{"p50_us", "starved", "daemon_rss_mib", "daemon_fds"}, s.measureRR,
			func(n string) *path {
				return &path{name: n, mtu: e.b.c.MTU, client: e.b.ns, server: e.bPeer.ns, dst: e.bPeer.c.IP}
			}, max(s.p.rrRuns, 1), func(err error) sample {
				if msg := err.Error(); !strings.Contains(msg, "No valid observations") && !strings.Contains(msg, "No messages were received") {
					return nil
				}
				// No answer within the run: p99 is at least its length.
				us := float64(s.p.rrSeconds) * 1e6
				return sample{"p99_us": us, "p50_us": us, "starved": 1}
			}},
		{"B: DNS p99, forwarded names (new per query)", "µs", "lower", "latency", "p99_us", "≤ 2× A idle",
			[]string{"qps", "p50_us", "answered_percent", "servfail", "timeouts", "starved", "daemon_rss_mib", "daemon_fds"}, s.measureNoisyDNS(e.p.bDNSConc),
			func(n string) *path { return &path{name: n, client: e.b.ns, dst: e.resolver} }, max(s.p.loadRuns, 1), func(err error) sample {
				if !strings.Contains(err.Error(), "no answer") {
					return nil
				}
				us := s.p.loadSeconds.Seconds() * 1e6
				return sample{"qps": 0, "p99_us": us, "p50_us": us, "answered_percent": 0, "starved": 1}
			}},
		{"B: new egress TCP connections (connect, 1 B each way, close)", "conn/s", "higher", "throughput", "conn_per_s", "≥ 0.8× A idle",
			[]string{"p99_us", "failed", "starved", "daemon_rss_mib", "daemon_fds"}, s.measureConnRate,
			func(n string) *path { return &path{name: n, client: e.b.ns, dst: "127.0.0.1"} }, max(s.p.loadRuns, 1), func(err error) sample {
				if !strings.Contains(err.Error(), "no connection completed") {
					return nil
				}
				return sample{"conn_per_s": 0, "starved": 1}
			}},
	}
	sets := [][]string{allFloods}
	if s.cfg.NoisyEach {
		for _, f := range allFloods {
			sets = append(sets, []string{f})
		}
	}
	for _, fig := range figures {
		idle := fig.path("B, A idle")
		paths := []*path{idle}
		labels := []string{""}
		for _, floor := range []bool{false, true} {
			for i, set := range sets {
				name, label := "B, A floods "+floodSetName(set), ""
				if i > 0 {
					label = " (diagnostic: " + floodSetName(set) + " alone)"
				}
				if floor {
					name += " at a kernel-only target"
					label = " (floor: A's " + floodSetName(set) + " at a kernel-only target, not through vrouter)"
					if i > 0 {
						label = " (floor: A's " + floodSetName(set) + " alone at a kernel-only target)"
					}
				}
				p := fig.path(name)
				e.floods[p], e.floor[p] = set, floor
				paths = append(paths, p)
				labels = append(labels, label)
			}
		}
		res := s.compare(ctx, sc, fig.runs, e.measure(fig.measure, fig.starved), paths...)
		for i := 1; i < len(paths); i++ {
			metric := fig.metric + labels[i]
			out.Rows = append(out.Rows, report.Row{
				Metric: metric, Unit: fig.unit, Better: fig.better, Chart: fig.chart, Target: fig.target,
				Subject: res.figure(i, fig.key, fig.details...), Baseline: ptr(res.figure(0, fig.key, fig.details...)),
			})
		}
	}
	out.Rows = append(out.Rows, e.resourceRows()...)
	rows, notes := e.afterRows(ctx)
	out.Rows = append(out.Rows, rows...)
	out.Notes = append(out.Notes, notes...)
	out.Notes = append(out.Notes,
		fmt.Sprintf("vrouter: two daemons as nobody in one cluster on loopback, node 1 with --egress-allow-loopback and otherwise default limits; A (network 1) and B (network 2) on node 1, a container of each network on node 2; A's and B's loopback routed out through the node as in scenario 3"),
		fmt.Sprintf("A's floods, started before each flooded measurement (%v ahead) and stopped after it: tcp: %d connections (64 dials in flight) to a loopback sink that accepts and never reads, each written into until it blocks; udp: %d datagrams/s to %d consecutive loopback ports of a sink that never reads; dns: dnsload, %d clients, a new forwarded name per query; peer: iperf3 -u -l 64 -b 0 to A's network on node 2",
			e.p.ramp, e.p.tcpConns, e.p.udpPPS, e.p.udpPorts, e.p.dnsConc),
		fmt.Sprintf("floor rows: the same floods from a namespace of their own (not attached to vrouter) at sinks on its loopback (the TCP and UDP sinks, an iperf3 server, a DNS server in the driver answering every name), while B measures through vrouter: what the floods cost B in CPU alone, the bound of B's ratio on this machine"),
		fmt.Sprintf("B's DNS: dnsload, %d clients, a new forwarded name per query (the flights A's flood competes for); B's request/response: sockperf ping-pong to B's container on node 2 (through the overlay queue A's peer flood fills)", e.p.bDNSConc),
		"daemon RSS and fds: node 1's forwarding worker (the supervisor's child), sampled from /proc every 100 ms; the baseline column is the idle runs before the first flood",
		"starved (in a figure's detail): runs in which B got nothing through while A flooded (no sockperf answer, no DNS answer, no connection); their p99 is counted as the run's length, their rate as 0")
	return nil
}

func floodSetName(set []string) string {
	if len(set) == len(allFloods) {
		return "all (" + strings.Join(set, ", ") + ")"
	}
	return strings.Join(set, ", ")
}

// noisySetup starts both nodes, attaches the four containers and starts
// the sinks.
func (s *Suite) noisySetup(ctx context.Context, sc *scope) (*noisyEnv, error) {
	e := &noisyEnv{s: s, p: s.noisyParams(), floods: make(map[*path][]string), floor: make(map[*path]bool),
		peakRSS: make(map[string]int64), peakFDs: make(map[string]int64), lastFlood: make(map[string]string)}
	key, err := s.clusterKey(ctx)
	if err != nil {
		return nil, err
	}
	if e.n1, err = s.startDaemon(ctx, sc, "vrb-noisy1", "--cluster-key-file", key, "--egress-allow-loopback"); err != nil {
		return nil, err
	}
	if e.n2, err = s.startDaemon(ctx, sc, "vrb-noisy2", "--cluster-key-file", key, "--join", fmt.Sprintf("127.0.0.1:%d", e.n1.gossip)); err != nil {
		return nil, err
	}
	// Closing a flooded node's flows takes a while.
	e.n1.proc.grace = 30 * time.Second
	if err := s.waitCluster(ctx, e.n1, e.n2); err != nil {
		return nil, err
	}
	pn1, pn2 := newID("pn"), newID("pn")
	appA, appB := newID("ap"), newID("ap")
	for _, c := range []struct {
		to      *attached
		d       *daemon
		pn, app string
	}{{&e.a, e.n1, pn1, appA}, {&e.aPeer, e.n2, pn1, appA}, {&e.b, e.n1, pn2, appB}, {&e.bPeer, e.n2, pn2, appB}} {
		ns, err := s.newNetns(ctx, sc, "n")
		if err != nil {
			return nil, err
		}
		ct, err := s.attach(ctx, c.d, ns, c.pn, c.app, "web")
		if err != nil {
			return nil, err
		}
		ct.Network = c.pn
		*c.to = attached{ns, ct}
	}
	for _, w := range []struct {
		d  *daemon
		of attached
	}{{e.n1, e.aPeer}, {e.n1, e.bPeer}, {e.n2, e.a}, {e.n2, e.b}} {
		if err := s.waitContainer(ctx, w.d, w.of.c.Network, w.of.c.IP); err != nil {
			return nil, err
		}
	}
	for _, ns := range []*netns{e.a.ns, e.b.ns} {
		if err := s.loopbackOut(ctx, ns); err != nil {
			return nil, err
		}
	}
	e.resolver = net.JoinHostPort(e.b.c.Resolver, "53")
	e.worker = e.n1.worker()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("flow storm sink: %w", err)
	}
	e.hold = loadgen.ServeHold(ln)
	sc.add("close the flow storm sink", e.hold.Close)
	if e.udp, err = loadgen.ListenUDPRange(netip.MustParseAddr("127.0.0.1"), e.p.udpPorts, rand.IntN); err != nil {
		return nil, err
	}
	sc.add("close the UDP port sink", e.udp.Close)
	if err := e.floorSetup(ctx, sc); err != nil {
		return nil, err
	}
	return e, nil
}

// floorSetup makes the floor's namespace and its sinks: sockets opened in
// the namespace (inNetns) stay in it, served by the driver's goroutines.
func (e *noisyEnv) floorSetup(ctx context.Context, sc *scope) error {
	ns, err := e.s.newNetns(ctx, sc, "floor")
	if err != nil {
		return err
	}
	e.floorNS = ns
	var serr error
	if err := inNetns(ns, func() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			serr = fmt.Errorf("floor flow storm sink: %w", err)
			return
		}
		e.floorHold = loadgen.ServeHold(ln)
		if e.floorUDP, err = loadgen.ListenUDPRange(netip.MustParseAddr("127.0.0.1"), e.p.udpPorts, rand.IntN); err != nil {
			serr = fmt.Errorf("floor UDP sink: %w", err)
			return
		}
		if e.floorDNS, err = loadgen.StartUpstream(netip.MustParseAddr("198.51.100.8"), 300); err != nil {
			serr = fmt.Errorf("floor DNS server: %w", err)
		}
	}); err != nil {
		serr = errors.Join(serr, err)
	}
	// Registered whatever failed: the scope closes what was made.
	if e.floorHold != nil {
		sc.add("close the floor's flow storm sink", e.floorHold.Close)
	}
	if e.floorUDP != nil {
		sc.add("close the floor's UDP sink", e.floorUDP.Close)
	}
	if e.floorDNS != nil {
		sc.add("stop the floor's DNS server", e.floorDNS.Close)
	}
	return serr
}

// measure wraps m: on a flooded path it starts the path's floods first
// and stops them after (a run in which B got nothing through is the
// sample starved makes of the error); on every path it samples node 1's
// worker.
func (e *noisyEnv) measure(m measureFn, starved func(error) sample) measureFn {
	return func(ctx context.Context, sc *scope, p *path) (sample, error) {
		set, floor := e.floods[p], e.floor[p]
		phase := "idle"
		e.mu.Lock()
		if floor {
			phase = "" // the daemon is not flooded: its peaks say nothing
		} else if len(set) > 0 {
			e.flooded = true
			phase = "flood"
		} else if e.flooded {
			phase = "" // idle after a flood: A's UDP flows are held until their idle timeout
		}
		e.mu.Unlock()
		sampler := e.startSampler()
		fs := newScope("floods", e.s.log)
		procs, err := e.startFloods(ctx, fs, set, floor)
		if err == nil && len(set) > 0 {
			err = pause(ctx, e.p.ramp)
		}
		var smp sample
		if err == nil {
			smp, err = m(ctx, sc, p)
			if err != nil && len(set) > 0 && ctx.Err() == nil {
				if st := starved(err); st != nil {
					e.s.log.Warn("B got nothing through during the flood", "path", p.name, "err", err)
					smp, err = st, nil
				}
			}
		}
		for name, pr := range procs {
			if err == nil && pr.exited() {
				err = fmt.Errorf("flood %s ended during the measurement (%v): %s", name, pr.err, lastLines(pr.out.String(), 3))
			}
		}
		if err == nil && len(set) > 0 && !floor {
			e.recordBudget(ctx)
		}
		cerr := fs.close()
		if slices.Contains(set, floodTCP) {
			// The storm's flows end (a RST from the sink), so that every
			// flooded run starts from an empty budget.
			if floor {
				e.floorHold.Drop()
			} else {
				e.hold.Drop()
			}
		}
		rss, fds := sampler.stop()
		if err != nil {
			return nil, err
		}
		if cerr != nil {
			return nil, fmt.Errorf("stop the floods: %w", cerr)
		}
		e.mu.Lock()
		for name, pr := range procs {
			if floor {
				name += " (floor)"
			}
			e.lastFlood[name] = strings.TrimSpace(pr.out.String())
		}
		if phase != "" {
			e.peakRSS[phase] = max(e.peakRSS[phase], rss)
			e.peakFDs[phase] = max(e.peakFDs[phase], fds)
		}
		e.mu.Unlock()
		smp["daemon_rss_mib"] = float64(rss) / 1024
		smp["daemon_fds"] = float64(fds)
		return smp, nil
	}
}

// startFloods starts the floods of set in A (and the peer's iperf3
// server), owned by fs; with floor, in the floor's namespace at its own
// sinks. Each runs longer than any measurement; fs stops them.
func (e *noisyEnv) startFloods(ctx context.Context, fs *scope, set []string, floor bool) (map[string]*proc, error) {
	s := e.s
	from, peer, peerIP := e.a.ns, e.aPeer.ns, e.aPeer.c.IP
	holdAddr, udpBase, resolver := e.hold.Addr().String(), e.udp.Base().String(), net.JoinHostPort(e.a.c.Resolver, "53")
	if floor {
		from, peer, peerIP = e.floorNS, e.floorNS, "127.0.0.1"
		holdAddr, udpBase, resolver = e.floorHold.Addr().String(), e.floorUDP.Base().String(), e.floorDNS.Addr()
	}
	d := 5*time.Minute + e.p.ramp
	procs := make(map[string]*proc)
	start := func(name string, ns *netns, args ...string) (*proc, error) {
		pr, err := s.startProc(fs, name, ns.cmd(args...), nil)
		if err != nil {
			return nil, err
		}
		pr.grace = 5 * time.Second
		return pr, nil
	}
	for _, f := range set {
		var pr *proc
		var err error
		switch f {
		case floodTCP:
			pr, err = start("floodload tcp-hold", from, s.cfg.FloodLoad, "-mode", loadgen.FloodTCPHold, "-addr", holdAddr,
				"-conns", strconv.Itoa(e.p.tcpConns), "-c", "64", "-d", d.String())
		case floodUDP:
			pr, err = start("floodload udp-ports", from, s.cfg.FloodLoad, "-mode", loadgen.FloodUDPPorts, "-addr", udpBase,
				"-ports", strconv.Itoa(e.p.udpPorts), "-pps", strconv.Itoa(e.p.udpPPS), "-d", d.String())
		case floodDNS:
			pr, err = start("dnsload flood", from, s.cfg.DNSLoad, "-server", resolver, "-name", "flood.bench.test.",
				"-unique", "-c", strconv.Itoa(e.p.dnsConc), "-d", d.String(), "-timeout", "1s")
		case floodPeer:
			port, perr := freePort()
			if perr != nil {
				return procs, perr
			}
			srv, serr := start("iperf3 peer sink", peer, "iperf3", "-s", "-1", "-p", strconv.Itoa(port))
			if serr != nil {
				return procs, serr
			}
			if err := s.waitListening(ctx, peer, "t", port, srv); err != nil {
				return procs, err
			}
			pr, err = start("iperf3 peer flood", from, "iperf3", "-c", peerIP, "-p", strconv.Itoa(port), "-u", "-l", "64", "-b", "0",
				"-t", strconv.Itoa(int(d.Seconds())), "--connect-timeout", "5000")
		default:
			return procs, fmt.Errorf("unknown flood %q", f)
		}
		if err != nil {
			return procs, err
		}
		procs[f] = pr
	}
	return procs, nil
}

// noisyStatus is the part of `status --json` scenario 9 reads.
type noisyStatus struct {
	Pid      int `json:"pid"`
	Restarts int `json:"restarts"`
	Budget   *struct {
		MaxFDs    int               `json:"max_fds"`
		FDs       int               `json:"fds"`
		MaxMemory int64             `json:"max_memory_bytes"`
		Memory    int64             `json:"memory_bytes"`
		Refused   map[string]uint64 `json:"refused"`
	} `json:"budget"`
	Drops    map[string]uint64 `json:"drops"`
	Counters map[string]uint64 `json:"counters"`
	DNS      struct {
		Counters map[string]uint64 `json:"counters"`
	} `json:"dns"`
	Egress map[string]uint64 `json:"egress"`
}

func (e *noisyEnv) status(ctx context.Context) (noisyStatus, error) {
	var st noisyStatus
	err := e.s.cli(ctx, e.n1, &st, "status", "--json")
	return st, err
}

// recordBudget keeps what node 1's budget holds at the end of a flooded
// measurement, while the floods still run.
func (e *noisyEnv) recordBudget(ctx context.Context) {
	st, err := e.status(ctx)
	if err != nil || st.Budget == nil {
		return
	}
	e.mu.Lock()
	e.budgetHeld = append(e.budgetHeld, float64(st.Budget.FDs))
	e.budgetMemMiB = append(e.budgetMemMiB, float64(st.Budget.Memory)/(1<<20))
	e.mu.Unlock()
}

// noisyRSSBoundMiB is the documented bound of node 1's RSS during the
// floods with default limits (bench/README.md, scenario 9).
const noisyRSSBoundMiB = 1024

// resourceRows: node 1's peak RSS and fd count, flooding beside idle.
func (e *noisyEnv) resourceRows() []report.Row {
	e.mu.Lock()
	defer e.mu.Unlock()
	fig := func(name string, v int64, scale float64, ok bool) report.Figure {
		if !ok {
			return report.Figure{Name: name, Skipped: "not measured"}
		}
		return report.Figure{Name: name, Value: float64(v) / scale, Samples: []float64{float64(v) / scale}}
	}
	_, okF := e.peakRSS["flood"]
	_, okI := e.peakRSS["idle"]
	rss := fig("A floods", e.peakRSS["flood"], 1024, okF)
	if n := len(e.budgetMemMiB); n > 0 {
		rss.Detail = map[string]float64{"budget_memory_mib_max": slices.Max(e.budgetMemMiB)}
	}
	fds := fig("A floods", e.peakFDs["flood"], 1, okF)
	if n := len(e.budgetHeld); n > 0 {
		fds.Detail = map[string]float64{"budget_fds_max": slices.Max(e.budgetHeld)}
	}
	return []report.Row{
		{Metric: "node 1 worker peak RSS", Unit: "MiB", Better: "lower", Subject: rss,
			Baseline: ptr(fig("A idle", e.peakRSS["idle"], 1024, okI)), Target: fmt.Sprintf("< %d MiB", noisyRSSBoundMiB)},
		{Metric: "node 1 worker peak open fds", Unit: "fds", Better: "lower", Subject: fds,
			Baseline: ptr(fig("A idle", e.peakFDs["idle"], 1, okI))},
	}
}

// afterRows: the worker's restarts (none: nothing crashed) with the
// daemon's refusal counters, and notes with A's floods' own results.
func (e *noisyEnv) afterRows(ctx context.Context) ([]report.Row, []string) {
	var notes []string
	st, err := e.status(ctx)
	restarts := report.Figure{Name: "vrouter"}
	switch {
	case err != nil:
		restarts.Error = err.Error()
	default:
		restarts.Value = float64(st.Restarts)
		restarts.Samples = []float64{restarts.Value}
		restarts.Detail = map[string]float64{}
		if w := e.n1.worker(); w != e.worker {
			restarts.Error = fmt.Sprintf("node 1's worker changed from pid %d to %d", e.worker, w)
		}
		if st.Budget != nil {
			restarts.Detail["budget_max_fds"] = float64(st.Budget.MaxFDs)
			restarts.Detail["budget_max_memory_mib"] = float64(st.Budget.MaxMemory) / (1 << 20)
			for r, v := range st.Budget.Refused {
				restarts.Detail["budget_refused_"+r] = float64(v)
			}
			notes = append(notes, "node 1 budget after the runs: max_fds "+strconv.Itoa(st.Budget.MaxFDs)+
				fmt.Sprintf(", max_memory %d MiB", st.Budget.MaxMemory>>20)+"; refused: "+formatCounters(st.Budget.Refused))
		}
		for _, k := range []string{"flood", "flood_network", "tcp_refused", "upstream_errors"} {
			restarts.Detail["dns_"+k] = float64(st.DNS.Counters[k])
		}
		for _, k := range []string{"limited", "denied", "tcp_refused", "tcp_failed"} {
			restarts.Detail["egress_"+k] = float64(st.Egress[k])
		}
		for k, v := range nonZero(st.Drops) {
			restarts.Detail["drops_"+k] = float64(v)
		}
		// The router's pauses of a flooding port (router/fair.go).
		pauses := map[string]uint64{}
		for _, k := range []string{"fair_pauses", "fair_resolver_pauses"} {
			restarts.Detail["router_"+k] = float64(st.Counters[k])
			pauses[k] = st.Counters[k]
		}
		notes = append(notes, "node 1 after the runs: dns "+formatCounters(nonZero(st.DNS.Counters))+"; egress "+formatCounters(nonZero(st.Egress))+
			"; drops "+formatCounters(nonZero(st.Drops))+"; router "+formatCounters(pauses))
	}
	e.mu.Lock()
	for _, f := range allFloods {
		for _, name := range []string{f, f + " (floor)"} {
			if o, ok := e.lastFlood[name]; ok {
				notes = append(notes, "A's last "+name+" flood: "+summarizeFlood(o))
			}
		}
	}
	e.mu.Unlock()
	return []report.Row{{Metric: "node 1 worker restarts (refusal counters in the detail)", Unit: "restarts", Better: "lower",
		Subject: restarts, Target: "0"}}, notes
}

// summarizeFlood shortens a flood tool's JSON output to its counters.
func summarizeFlood(out string) string {
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		// iperf3's text: its summary lines, if it printed them.
		var sum []string
		for line := range strings.SplitSeq(out, "\n") {
			if strings.Contains(line, "sender") || strings.Contains(line, "receiver") {
				sum = append(sum, strings.Join(strings.Fields(line), " "))
			}
		}
		if len(sum) > 0 {
			return strings.Join(sum, " | ")
		}
		return lastLines(out, 2)
	}
	var parts []string
	for _, k := range []string{"attempts", "established", "refused", "timeouts", "reset", "datagrams", "sent", "completed", "errors", "per_second", "rcodes"} {
		if v, ok := m[k]; ok {
			b, _ := json.Marshal(v)
			parts = append(parts, k+"="+string(b))
		}
	}
	return strings.Join(parts, " ")
}

// sampler polls node 1's worker's RSS and fd count until stopped.
type sampler struct {
	stopc    chan struct{}
	done     chan struct{}
	rss, fds int64
}

func (e *noisyEnv) startSampler() *sampler {
	sm := &sampler{stopc: make(chan struct{}), done: make(chan struct{})}
	pid := e.worker
	go func() {
		defer close(sm.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if r, err := rssKiB(pid); err == nil {
				sm.rss = max(sm.rss, r)
			}
			if ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd"); err == nil {
				sm.fds = max(sm.fds, int64(len(ents)))
			}
			select {
			case <-sm.stopc:
				return
			case <-t.C:
			}
		}
	}()
	return sm
}

// stop ends the sampling and returns the peaks (RSS in KiB).
func (sm *sampler) stop() (rss, fds int64) {
	close(sm.stopc)
	<-sm.done
	return sm.rss, sm.fds
}

// measureNoisyDNS is B's DNS load: forwarded names, new per query, from
// conc clients. Unlike scenario 5 it does not fail on SERVFAIL: lost
// answers are what it looks for (answered_percent).
func (s *Suite) measureNoisyDNS(conc int) measureFn {
	return func(ctx context.Context, sc *scope, p *path) (sample, error) {
		var r loadgen.Result
		if err := s.runJSON(ctx, p.client, &r, s.cfg.DNSLoad, "-server", p.dst, "-name", "b.bench.test.", "-unique",
			"-c", strconv.Itoa(conc), "-d", s.p.loadSeconds.String()); err != nil {
			return nil, err
		}
		if r.Completed == 0 {
			return nil, errors.New("no answer (" + strconv.FormatUint(r.Sent, 10) + " sent): " + r.FirstError)
		}
		good := r.Rcodes["NOERROR"] - min(r.NoAnswer, r.Rcodes["NOERROR"])
		return sample{
			"qps": r.PerSecond, "p50_us": r.LatencyUS.P50, "p99_us": r.LatencyUS.P99,
			"answered_percent": 100 * float64(good) / float64(max(r.Sent, 1)),
			"servfail":         float64(r.Rcodes["SERVFAIL"]), "timeouts": float64(r.Timeouts),
		}, nil
	}
}
