package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vrouter/vrouter/bench/report"
	"github.com/vrouter/vrouter/bench/stats"
)

// failoverParams are the counts and durations of scenario 7.
type failoverParams struct {
	rounds      int           // kill -9 measurements, each of a freshly (re)started active gateway
	drainWindow time.Duration // connections go on this long after new ones left through the other gateway
	// settle is how long new connections must have left through the
	// active gateway before it is killed: a steady state, not a cluster
	// still starting (a worker gives a gateway it starts probing 2 s of
	// grace, overlayProbeGrace in internal/daemon).
	settle time.Duration
	kill   probeConfig // new connections around a kill
	drain  probeConfig // new connections around a drain
}

func failoverParamsFor(quick bool) failoverParams {
	p := failoverParams{
		rounds: 3, drainWindow: 5 * time.Second, settle: 2500 * time.Millisecond,
		// A connection started while the path is down loses its SYN and
		// is abandoned after the timeout, well before the kernel's first
		// SYN retransmission (1 s): one starts every 20 ms, and enough
		// clients that even while every attempt times out none is
		// skipped.
		kill: probeConfig{every: 20 * time.Millisecond, workers: 12, timeout: 200 * time.Millisecond, limit: time.Minute},
		// Counting failures: a slow connection on a busy machine is not a
		// failure; one that needs a SYN retransmission is.
		drain: probeConfig{every: 10 * time.Millisecond, workers: 4, timeout: time.Second, limit: time.Minute},
	}
	if quick {
		// Still past one push-pull of the fast timing (2 s): a full state
		// exchange after the drain must not break connections either.
		p.rounds, p.drainWindow = 1, 2500*time.Millisecond
	}
	return p
}

// scenFailover: the new-connection outage after kill -9 of the gateway
// carrying an app's new connections, and the connections that fail while
// that gateway is drained.
func (s *Suite) scenFailover(ctx context.Context, sc *scope, out *report.Scenario) error {
	if err := s.needRoot(); err != nil {
		return err
	}
	if err := s.needTools("ip", "setpriv"); err != nil {
		return err
	}
	if err := s.needDedicatedEgress(ctx); err != nil {
		return err
	}
	fp := failoverParamsFor(s.cfg.Quick)
	srv, err := startSrcServer()
	if err != nil {
		return err
	}
	sc.add("stop the source server", srv.Close)

	// The suite's gossip timing (fast) first, with the drain; then the
	// default (lan), where memberlist takes seconds to suspect a dead node
	// and the workers' overlay probes must do the failover. Each cluster
	// lives in a scope of its own, gone before the next starts, so that an
	// idle cluster's gossip does not share the cores with the measurement.
	var drainNotes []string
	for _, timing := range []string{"fast", "lan"} {
		label := "gossip timing " + timing
		if timing == "lan" {
			label += ", the default"
		}
		sub := newScope("scenario 7, "+label, s.log)
		sc.add("close "+sub.name, sub.close)
		cl, err := s.startGatewayCluster(ctx, sub, "vrb-f"+timing[:1], "--gossip-timing", timing)
		if err == nil {
			_, err = s.waitThroughGateway(ctx, cl, srv.Addr())
		}
		if err != nil {
			if timing == "fast" {
				return err
			}
			out.Rows = append(out.Rows, killRows(label, nil, err)...)
			break
		}
		if timing == "fast" {
			rows, notes := s.drainRows(ctx, cl, srv.Addr(), fp)
			out.Rows = append(out.Rows, rows...)
			drainNotes = notes
		}
		var rounds []killRound
		var roundErr error
		for i := range fp.rounds {
			r, err := s.measureKill(ctx, sub, cl, srv.Addr(), fp, i > 0)
			if err != nil {
				roundErr = fmt.Errorf("round %d: %w", i+1, err)
				s.log.Warn("failover measurement failed", "timing", timing, "round", i+1, "err", err)
				break
			}
			s.log.Info("failover", "timing", timing, "round", i+1, "outage", r.outage.Round(time.Millisecond), "failed_attempts", r.failed, "from", r.from, "to", r.to)
			rounds = append(rounds, r)
		}
		out.Rows = append(out.Rows, killRows(label, rounds, roundErr)...)
		if err := sub.close(); err != nil {
			return fmt.Errorf("cleanup of %s: %w", sub.name, err)
		}
	}

	out.Notes = append(out.Notes,
		fmt.Sprintf("per gossip timing, three daemons as nobody in one cluster on loopback: a worker with the container and two gateways (--egress-ip %s, %s); connections go from the container to a server on the host's 127.0.0.1 that answers with the source address it sees, so every connection says which gateway it left through", egressIPs[0], egressIPs[1]),
		"gossip timing fast (the suite's daemons): memberlist probes every 200 ms with a 100 ms timeout, so it suspects the dead gateway first; lan (the daemon's default): memberlist suspects after seconds and the failover is the workers' overlay probes (a gateway not heard for 6 probe rounds of 50 ms and 300 ms gets no new flows)",
		fmt.Sprintf("kill: from the container a new connection starts every %v (up to %d at a time), %v timeout, below the kernel's 1 s SYN retransmission, so an attempt fails when the path is down as it starts; outage = from kill -9 of the gateway the connections left through to the end of the first connection through the other; its uncertainty (JSON) is the gap between the last failed start and that connection's start", fp.kill.every, fp.kill.workers, fp.kill.timeout),
		fmt.Sprintf("%d round(s) per timing; each after the first restarts the killed gateway (same name, state directory and gossip port); a round kills once new connections have left through the IP the worker shows active for %v, with both IPs healthy and both gateways alive with a WireGuard session on the worker", fp.rounds, fp.settle),
		fmt.Sprintf("drain (gossip timing fast): a new connection every %v (up to %d at a time), %v timeout; `vrouter gateway drain` on the gateway the connections left through; failed = connections that failed from the drain command until %v after the first one through the other gateway, plus one connection opened before the drain that must still echo afterwards", fp.drain.every, fp.drain.workers, fp.drain.timeout, fp.drainWindow))
	out.Notes = append(out.Notes, drainNotes...)
	return nil
}

// killRound is one kill -9 measurement.
type killRound struct {
	outage, uncertainty time.Duration
	failed              int
	skipped             int    // connection starts skipped, every client busy
	from, to            string // egress IPs before and after
}

// killRows reports the rounds of one gossip timing: median and worst
// outage, failed attempts.
func killRows(label string, rounds []killRound, err error) []report.Row {
	metric := "new-connection outage after kill -9 of the active gateway (" + label + ")"
	if len(rounds) == 0 {
		if err == nil {
			err = errors.New("no round ran")
		}
		return []report.Row{{Metric: metric, Unit: "ms", Better: "lower", Target: "≤ 1 s",
			Subject: report.Figure{Name: "vrouter", Error: err.Error()}}}
	}
	var outMS, failed, uncMS []float64
	skipped := 0
	for _, r := range rounds {
		outMS = append(outMS, ms(r.outage))
		failed = append(failed, float64(r.failed))
		uncMS = append(uncMS, ms(r.uncertainty))
		skipped += r.skipped
	}
	worst := slices.Max(outMS)
	outage := report.Figure{Name: "vrouter", Value: stats.Median(outMS), Samples: outMS,
		Detail: map[string]float64{"max_ms": worst, "rounds": float64(len(rounds)), "uncertainty_ms_max": slices.Max(uncMS), "skipped_starts": float64(skipped)}}
	rows := []report.Row{{Metric: fmt.Sprintf("%s, median of %d", metric, len(rounds)), Unit: "ms", Better: "lower", Target: "≤ 1 s", Subject: outage}}
	if len(rounds) > 1 {
		rows = append(rows, report.Row{Metric: fmt.Sprintf("%s, worst of %d", metric, len(rounds)), Unit: "ms", Better: "lower", Target: "≤ 1 s",
			Subject: report.Figure{Name: "vrouter", Value: worst, Samples: outMS}})
	}
	rows = append(rows, report.Row{Metric: "connection attempts failed before the first one through the other gateway (" + label + ")", Unit: "attempts", Better: "lower",
		Subject: report.Figure{Name: "vrouter", Value: stats.Median(failed), Samples: failed, Detail: map[string]float64{"max": slices.Max(failed)}}})
	if err != nil {
		rows = append(rows, report.Row{Metric: metric + ", further rounds", Unit: "ms", Better: "lower",
			Subject: report.Figure{Name: "vrouter", Error: err.Error()}})
	}
	return rows
}

// measureKill kills the gateway the container's new connections leave
// through and measures how long new connections fail. With restart, the
// gateway killed last time is started again first.
func (s *Suite) measureKill(ctx context.Context, sc *scope, cl *gwCluster, addr string, fp failoverParams, restart bool) (killRound, error) {
	if restart {
		for _, g := range cl.gws {
			if !g.d.proc.exited() {
				continue
			}
			d, err := s.restartDaemon(ctx, sc, g.d, g.extra...)
			if err != nil {
				return killRound{}, fmt.Errorf("restart %s: %w", g.d.name, err)
			}
			g.d = d
		}
		if err := s.waitHealthy(ctx, cl); err != nil {
			return killRound{}, err
		}
	}
	pc := fp.kill
	pc.addr = addr
	pr := startProber(cl.ns, pc)
	defer pr.Close()
	from, err := s.waitSteady(ctx, cl, pr, fp.settle)
	if err != nil {
		return killRound{}, err
	}
	victim := cl.gatewayOf(from)
	killAt := time.Now()
	if err := victim.d.proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return killRound{}, fmt.Errorf("kill -9 %s: %w", victim.d.name, err)
	}
	if err := victim.d.proc.wait(10 * time.Second); err != nil && !victim.d.proc.exited() {
		return killRound{}, fmt.Errorf("kill -9 %s: %w", victim.d.name, err)
	}
	var r killRound
	err = waitFor(ctx, 15*time.Second, "a new connection through the other gateway after kill -9 of "+victim.d.name, func() error {
		var ok bool
		if r, ok = outageAfter(pr.attempts(), killAt, from); !ok {
			return errors.New("none yet")
		}
		return nil
	})
	if perr := pr.Close(); perr != nil {
		return killRound{}, perr
	}
	if err != nil {
		return killRound{}, err
	}
	r, _ = outageAfter(pr.attempts(), killAt, from)
	r.skipped = pr.skips()
	return r, nil
}

// drainRows measures a drain of the gateway the new connections leave
// through, undrains it, and reports the failures.
func (s *Suite) drainRows(ctx context.Context, cl *gwCluster, addr string, fp failoverParams) (rows []report.Row, notes []string) {
	row := report.Row{Metric: "failed connections during a drain of the active gateway", Unit: "connections", Better: "lower", Target: "0"}
	switchRow := report.Row{Metric: "drain: new connections through the other gateway after", Unit: "ms", Better: "lower"}
	d, drainAt, err := s.measureDrain(ctx, cl, addr, fp)
	if err != nil {
		row.Subject = report.Figure{Name: "vrouter", Error: err.Error()}
		return []report.Row{row}, nil
	}
	for _, a := range d.fails {
		s.log.Warn("connection failed during the drain", "started_after_drain", a.start.Sub(drainAt).Round(time.Millisecond),
			"took", a.end.Sub(a.start).Round(time.Millisecond), "err", a.err)
	}
	if len(d.fails) > 0 {
		a := d.fails[0]
		notes = append(notes, fmt.Sprintf("drain: %d new connections failed; the first started %v after the drain command and failed after %v: %s",
			d.failed, a.start.Sub(drainAt).Round(time.Millisecond), a.end.Sub(a.start).Round(time.Millisecond), a.err))
	}
	if !d.survived {
		notes = append(notes, "drain: the connection opened before the drain through the drained gateway no longer echoed afterwards")
	}
	survived := 0.0
	if d.survived {
		survived = 1
	}
	failed := float64(d.failed)
	if !d.survived {
		failed++
	}
	row.Subject = report.Figure{Name: "vrouter", Value: failed, Samples: []float64{failed},
		Detail: map[string]float64{"new_connections": float64(d.attempts), "new_failed": float64(d.failed), "established_survived": survived}}
	switchRow.Subject = report.Figure{Name: "vrouter", Value: ms(d.switched), Samples: []float64{ms(d.switched)}}
	return []report.Row{row, switchRow}, notes
}

// drainResult is what measureDrain saw.
type drainResult struct {
	drainOutcome
	survived bool // the connection opened before the drain still echoed after it
}

// measureDrain drains the gateway the new connections leave through while
// connections go on, and undrains it; it returns when it issued the drain.
func (s *Suite) measureDrain(ctx context.Context, cl *gwCluster, addr string, fp failoverParams) (drainResult, time.Time, error) {
	pc := fp.drain
	pc.addr = addr
	pr := startProber(cl.ns, pc)
	defer pr.Close()
	from, err := s.waitSteady(ctx, cl, pr, 0)
	if err != nil {
		return drainResult{}, time.Time{}, err
	}
	gw := cl.gatewayOf(from)
	// One established connection through the gateway about to drain:
	// drained gateways keep their flows.
	var held net.Conn
	var heldSrc string
	if nerr := inNetns(cl.ns, func() { held, heldSrc, err = dialSource(addr, pc.timeout) }); nerr != nil {
		return drainResult{}, time.Time{}, nerr
	}
	if err != nil {
		return drainResult{}, time.Time{}, fmt.Errorf("connection held across the drain: %w", err)
	}
	defer held.Close()
	if heldSrc != from {
		return drainResult{}, time.Time{}, fmt.Errorf("connection held across the drain left through %s, new ones through %s", heldSrc, from)
	}

	drainAt := time.Now()
	if err := s.cli(ctx, gw.d, nil, "gateway", "drain", "--json"); err != nil {
		return drainResult{}, time.Time{}, err
	}
	err = waitFor(ctx, 15*time.Second, "new connections through the other gateway after the drain of "+gw.d.name, func() error {
		if o := drainSummary(pr.attempts(), drainAt, from); o.switched <= 0 {
			return errors.New("none yet")
		}
		return nil
	})
	if err == nil {
		err = pause(ctx, fp.drainWindow)
	}
	survived := echoes(held, pc.timeout) == nil
	if perr := pr.Close(); perr != nil {
		err = errors.Join(err, perr)
	}
	uerr := s.cli(ctx, gw.d, nil, "gateway", "undrain", "--json")
	if uerr == nil {
		uerr = s.waitHealthy(ctx, cl)
	}
	if err := errors.Join(err, uerr); err != nil {
		return drainResult{}, time.Time{}, err
	}
	as := pr.attempts()
	o := drainSummary(as, drainAt, from)
	// Failures at the end are in the count; success through the drained
	// gateway is a drain that did not work.
	if !o.settled && o.failed == 0 {
		return drainResult{}, time.Time{}, fmt.Errorf("after the drain of %s the last new connections did not all leave through the other gateway (%s)", gw.d.name, attemptTail(as, drainAt, 2*settleCount))
	}
	return drainResult{drainOutcome: o, survived: survived}, drainAt, nil
}

// attemptTail describes the last n attempts of as (sorted by start, as
// prober.attempts returns them) by start after drainAt, source and local
// port: whether a connection through
// the drained gateway reused a port (a flow pinned before the drain) or the
// route went back to it tells two different faults apart.
func attemptTail(as []attempt, drainAt time.Time, n int) string {
	var b strings.Builder
	b.WriteString("last attempts, start after the drain, source, local port:")
	for _, a := range as[max(0, len(as)-n):] {
		src := a.src
		if !a.ok() {
			src = "failed"
		}
		fmt.Fprintf(&b, " %+dms %s :%d;", a.start.Sub(drainAt).Milliseconds(), src, a.port)
	}
	return b.String()
}

// echoes checks that c (to a srcServer) still carries a byte both ways.
func echoes(c net.Conn, timeout time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte{'x'}); err != nil {
		return err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return err
	}
	if b[0] != 'x' {
		return fmt.Errorf("echo %q, want x", b[0])
	}
	return nil
}

// waitSteady waits until the prober's last connections (at least
// settleCount, over at least settle) all succeeded through the egress IP
// the worker shows active, and the standby is ready
// to take over: every IP healthy, every gateway alive with a WireGuard
// handshake on the worker (a restarted gateway is suspect for a while,
// and has no session until the worker's probes make one). It returns the
// active IP.
func (s *Suite) waitSteady(ctx context.Context, cl *gwCluster, pr *prober, settle time.Duration) (string, error) {
	var ip string
	err := waitFor(ctx, 30*time.Second, "new connections steadily through the active egress IP, the standby ready", func() error {
		if err := pr.err(); err != nil {
			return permanent(err)
		}
		src, since, n := steadyRun(pr.attempts())
		if n < settleCount || time.Since(since) < settle {
			return fmt.Errorf("the last %d connections succeeded through %q for %v", n, src, time.Since(since).Round(time.Millisecond))
		}
		a, err := s.egressShow(ctx, cl)
		if err != nil {
			return err
		}
		active := ""
		for _, e := range a.IPs {
			if e.Health != "healthy" {
				return fmt.Errorf("%s on %s is %s", e.IP, e.Gateway, e.Health)
			}
			if e.Active {
				active = e.IP
			}
		}
		if active != src {
			return fmt.Errorf("connections leave through %s, the worker shows %q active", src, active)
		}
		var ps []peer
		if err := s.cli(ctx, cl.worker, &ps, "peers", "--json"); err != nil {
			return err
		}
		for _, g := range cl.gws {
			i := slices.IndexFunc(ps, func(p peer) bool { return p.Name == g.d.name })
			if i < 0 || ps[i].State != "alive" || ps[i].LastHandshake == nil {
				return fmt.Errorf("gateway %s not alive with a handshake on the worker", g.d.name)
			}
		}
		ip = src
		return nil
	})
	if err == nil && cl.gatewayOf(ip) == nil {
		err = fmt.Errorf("connections leave through %s, not a gateway's egress IP", ip)
	}
	return ip, err
}

// restartDaemon starts d again after it died, as startDaemon (daemon.go)
// does, keep the two in step: same name, state directory, gossip port
// and extra flags, so that the cluster sees the same node come back (a
// node with the same name at another port would conflict).
func (s *Suite) restartDaemon(ctx context.Context, sc *scope, d *daemon, extra ...string) (*daemon, error) {
	nd := &daemon{name: d.name, dir: d.dir, sock: filepath.Join(d.dir, "control.sock"), gossip: d.gossip}
	args := []string{
		"setpriv", "--reuid=" + daemonUser, "--regid=" + daemonGroup, "--clear-groups", "--pdeathsig", "KILL",
		s.bin, "run", "--state-dir", nd.dir, "--control", nd.sock, "--name", nd.name,
		"--gossip", "127.0.0.1:" + strconv.Itoa(nd.gossip), "--listen", "127.0.0.1:0",
		"--dns-upstream", s.upstream.Addr(), "--gossip-timing", "fast",
	}
	var err error
	nd.proc, err = s.startProc(sc, "vrouter "+nd.name+" (restarted)", append(args, extra...), func(c *exec.Cmd) { c.Dir = nd.dir })
	if err != nil {
		return nil, err
	}
	err = waitFor(ctx, 20*time.Second, "daemon "+nd.name+" running again", func() error {
		if nd.proc.exited() {
			return permanent(fmt.Errorf("exited (%v): %s", nd.proc.err, lastLines(nd.proc.out.String(), 5)))
		}
		if !strings.Contains(nd.proc.out.String(), runningLine) {
			return fmt.Errorf("no %s line yet", runningLine)
		}
		return s.cli(ctx, nd, nil, "status", "--json")
	})
	if err != nil {
		return nil, err
	}
	return nd, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// probeConfig configures a prober.
type probeConfig struct {
	addr    string        // a srcServer
	every   time.Duration // a new connection starts this often…
	workers int           // …unless this many are in flight: that start is skipped
	timeout time.Duration // of one attempt: connect and read the source line
	limit   time.Duration // the prober stops by itself after this long
}

// attempt is one new connection of a prober.
type attempt struct {
	start, end time.Time
	src        string // the source address the server saw; "" if it failed
	port       int    // the connection's local port in the container, when it succeeded
	err        string
}

func (a attempt) ok() bool { return a.src != "" }

// maxAttempts bounds a prober's log.
const maxAttempts = 100_000

// prober opens new connections from a namespace to a srcServer on a clock
// and logs each. A clock rather than clients that retry at once: after a
// failure, clients that retry at once all start again a timeout later
// together, and the starts bunch up. It owns the clock goroutine, one
// goroutine per client (each on a thread in the namespace) and one that
// waits for them; Close stops them.
type prober struct {
	cfg      probeConfig
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}

	mu      sync.Mutex
	log     []attempt
	skipped int // clock ticks that found every client busy
	errs    []error
}

func startProber(ns *netns, cfg probeConfig) *prober {
	p := &prober{cfg: cfg, stop: make(chan struct{}), done: make(chan struct{})}
	// Unbuffered: a tick goes to an idle client or is skipped.
	ticks := make(chan time.Time)
	var wg sync.WaitGroup
	for range cfg.workers {
		wg.Go(func() {
			if err := inNetns(ns, func() { p.client(ticks) }); err != nil {
				p.mu.Lock()
				p.errs = append(p.errs, err)
				p.mu.Unlock()
			}
		})
	}
	wg.Go(func() { p.clock(ticks) })
	go func() {
		wg.Wait()
		close(p.done)
	}()
	return p
}

// clock hands a tick to an idle client every cfg.every until stop or the
// limit; closing ticks ends the clients.
func (p *prober) clock(ticks chan<- time.Time) {
	defer close(ticks)
	t := time.NewTicker(p.cfg.every)
	defer t.Stop()
	end := time.NewTimer(p.cfg.limit)
	defer end.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-end.C:
			return
		case now := <-t.C:
			select {
			case ticks <- now:
			default:
				p.mu.Lock()
				p.skipped++
				p.mu.Unlock()
			}
		}
	}
}

// client makes one attempt per tick it gets.
func (p *prober) client(ticks <-chan time.Time) {
	for range ticks {
		a := attempt{start: time.Now()}
		c, src, err := dialSource(p.cfg.addr, p.cfg.timeout)
		a.end = time.Now()
		if err != nil {
			a.err = err.Error()
		} else {
			if la, ok := c.LocalAddr().(*net.TCPAddr); ok {
				a.port = la.Port
			}
			c.Close()
			a.src = src
		}
		p.mu.Lock()
		if len(p.log) < maxAttempts {
			p.log = append(p.log, a)
		}
		p.mu.Unlock()
	}
}

// attempts returns a copy of the log, by start time.
func (p *prober) attempts() []attempt {
	p.mu.Lock()
	out := slices.Clone(p.log)
	p.mu.Unlock()
	sortAttempts(out)
	return out
}

// skips is the number of starts skipped so far because every client was
// busy.
func (p *prober) skips() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.skipped
}

func (p *prober) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return errors.Join(p.errs...)
}

// Close stops the clock, waits for the clients (at most one attempt's
// timeout) and returns their errors. Calling it again returns the same.
func (p *prober) Close() error {
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.done
	return p.err()
}

func sortAttempts(as []attempt) {
	slices.SortStableFunc(as, func(a, b attempt) int { return a.start.Compare(b.start) })
}

// steadyRun returns the tail of as (by start) that succeeded through one
// source: that source, the start of the run's first attempt and its
// length.
func steadyRun(as []attempt) (src string, since time.Time, n int) {
	for i := len(as) - 1; i >= 0; i-- {
		a := as[i]
		if !a.ok() || (n > 0 && a.src != src) {
			break
		}
		src, since = a.src, a.start
		n++
	}
	return src, since, n
}

// outageAfter finds, in as (by start), the first connection that started
// at or after kill and succeeded through another source than dead: the
// outage ends when it does. failed counts the attempts that started from
// kill up to its start and failed; uncertainty is the gap between the
// last of those and its start (the path came back in between).
func outageAfter(as []attempt, kill time.Time, dead string) (r killRound, ok bool) {
	var first *attempt
	for i := range as {
		a := &as[i]
		if a.start.Before(kill) || !a.ok() || a.src == dead {
			continue
		}
		if first == nil || a.end.Before(first.end) {
			first = a
		}
	}
	if first == nil {
		return killRound{}, false
	}
	r = killRound{outage: first.end.Sub(kill), from: dead, to: first.src}
	lastFail := kill
	for _, a := range as {
		if a.start.Before(kill) || a.start.After(first.start) || a.ok() {
			continue
		}
		r.failed++
		if a.start.After(lastFail) {
			lastFail = a.start
		}
	}
	r.uncertainty = first.start.Sub(lastFail)
	return r, true
}

// drainOutcome summarises the connections around a drain.
type drainOutcome struct {
	attempts, failed int           // attempts in flight at or started after the drain, and the failed ones
	switched         time.Duration // from the drain to the end of the first new connection through another source; 0 if none
	settled          bool          // the last attempts all succeeded through another source
	fails            []attempt     // the failed attempts, the first maxDrainFails
}

// maxDrainFails bounds the failed attempts a drainOutcome keeps.
const maxDrainFails = 10

// settleCount is how many of the last attempts must have left through the
// other gateway for a drain to count as complete.
const settleCount = 5

// drainSummary reads as (by start) for a drain issued at drainAt of the
// gateway whose source is drained.
func drainSummary(as []attempt, drainAt time.Time, drained string) drainOutcome {
	var o drainOutcome
	for _, a := range as {
		if a.end.Before(drainAt) {
			continue
		}
		o.attempts++
		if !a.ok() {
			o.failed++
			if len(o.fails) < maxDrainFails {
				o.fails = append(o.fails, a)
			}
			continue
		}
		if a.src != drained && !a.start.Before(drainAt) {
			if d := a.end.Sub(drainAt); o.switched == 0 || d < o.switched {
				o.switched = d
			}
		}
	}
	if src, _, n := steadyRun(as); n >= settleCount && src != drained {
		o.settled = true
	}
	return o
}
