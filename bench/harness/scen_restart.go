package harness

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vrouter/vrouter/bench/report"
	"github.com/vrouter/vrouter/bench/stats"
)

// restartRounds is how many kill -9 and how many upgrade rounds scenario
// 10 measures, quick or not: each is a few seconds.
const restartRounds = 5

// pingEvery is the interval of scenario 10's pings: the gap's resolution.
const pingEvery = 10 * time.Millisecond

// scenRestart: the longest time without a ping reply between two
// containers of a node while its forwarding worker is killed with
// SIGKILL (the supervisor restarts it and hands the TUNs over) and while
// it is upgraded (`vrouter upgrade`, to the same binary).
func (s *Suite) scenRestart(ctx context.Context, sc *scope, out *report.Scenario) error {
	if err := s.needRoot(); err != nil {
		return err
	}
	if err := s.needTools("ip", "setpriv", "ping"); err != nil {
		return err
	}
	d, err := s.startDaemon(ctx, sc, "vrb-rs")
	if err != nil {
		return err
	}
	a, b, err := s.twoContainers(ctx, sc, d, d)
	if err != nil {
		return err
	}
	kill := func(ctx context.Context) error {
		return syscall.Kill(d.worker(), syscall.SIGKILL)
	}
	upgrade := func(ctx context.Context) error {
		return s.cli(ctx, d, nil, "upgrade", "--binary", s.bin)
	}
	for _, m := range []struct {
		what string
		act  func(context.Context) error
	}{{"kill -9 of the worker", kill}, {"vrouter upgrade", upgrade}} {
		var gaps []float64
		var roundErr error
		for i := range restartRounds {
			g, err := s.pingGap(ctx, sc, a, b, m.act)
			if err != nil {
				roundErr = fmt.Errorf("round %d: %w", i+1, err)
				break
			}
			s.log.Info("restart", "what", m.what, "round", i+1, "gap", g.Round(time.Millisecond))
			gaps = append(gaps, ms(g))
		}
		out.Rows = append(out.Rows, gapRows(m.what, gaps, roundErr)...)
	}
	var st struct {
		Restarts   int `json:"restarts"`
		Supervisor struct {
			Upgrades int `json:"upgrades"`
		} `json:"supervisor"`
	}
	if err := s.cli(ctx, d, &st, "status", "--json"); err != nil {
		return err
	}
	out.Notes = append(out.Notes,
		fmt.Sprintf("one daemon as nobody, two containers in one network; from one a ping every %v to the other (-D timestamps); gap = the longest time between two consecutive replies, so it includes one interval; each round starts a fresh ping and acts 1 s into it", pingEvery),
		fmt.Sprintf("kill -9: SIGKILL to the worker (the child of vrouter run); the supervisor starts a new worker at once and hands it the TUN fds. upgrade: vrouter upgrade --binary to the same binary (standby, stop of the old worker, handover). After the scenario the daemon counted %d restarts and %d upgrades", st.Restarts, st.Supervisor.Upgrades))
	return nil
}

// gapRows are the median and the worst of one kind of round.
func gapRows(what string, gaps []float64, err error) []report.Row {
	metric := "ping gap across " + what + " (same node)"
	if len(gaps) == 0 {
		if err == nil {
			err = errors.New("no round ran")
		}
		return []report.Row{{Metric: metric, Unit: "ms", Better: "lower", Target: "≤ 2 s", Subject: report.Figure{Name: "vrouter", Error: err.Error()}}}
	}
	rows := []report.Row{
		{Metric: fmt.Sprintf("%s, median of %d", metric, len(gaps)), Unit: "ms", Better: "lower", Target: "≤ 2 s",
			Subject: report.Figure{Name: "vrouter", Value: stats.Median(gaps), Samples: gaps}},
		{Metric: fmt.Sprintf("%s, worst of %d", metric, len(gaps)), Unit: "ms", Better: "lower", Target: "≤ 2 s",
			Subject: report.Figure{Name: "vrouter", Value: slices.Max(gaps), Samples: gaps}},
	}
	if err != nil {
		rows = append(rows, report.Row{Metric: metric + ", further rounds", Unit: "ms", Better: "lower", Subject: report.Figure{Name: "vrouter", Error: err.Error()}})
	}
	return rows
}

var pingReply = regexp.MustCompile(`(?m)^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=\d+`)

// pingGap pings from a to b for 3 s, runs act 1 s in, and returns the
// longest time between two replies.
func (s *Suite) pingGap(ctx context.Context, sc *scope, a, b attached, act func(context.Context) error) (time.Duration, error) {
	const count = 300 // 3 s
	p, err := s.startProc(sc, "ping", a.ns.cmd("ping", "-n", "-D", "-W", "1", "-i", strconv.FormatFloat(pingEvery.Seconds(), 'f', 3, 64), "-c", strconv.Itoa(count), b.c.IP), nil)
	if err != nil {
		return 0, err
	}
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(time.Second):
	}
	if err := act(ctx); err != nil {
		return 0, err
	}
	// ping exits 1 when replies were lost; the gap says how many.
	if err := p.wait(30 * time.Second); err != nil && !p.exited() {
		return 0, err
	}
	return longestGap(p.out.String())
}

// longestGap reads ping -D output.
func longestGap(out string) (time.Duration, error) {
	var ts []float64
	for _, m := range pingReply.FindAllStringSubmatch(out, -1) {
		t, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			return 0, err
		}
		ts = append(ts, t)
	}
	if len(ts) < 2 {
		return 0, fmt.Errorf("ping: %d replies: %s", len(ts), lastLines(strings.TrimSpace(out), 3))
	}
	worst := 0.0
	for i := 1; i < len(ts); i++ {
		worst = max(worst, ts[i]-ts[i-1])
	}
	return time.Duration(worst * float64(time.Second)), nil
}
