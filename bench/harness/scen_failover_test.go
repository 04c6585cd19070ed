package harness

import (
	"net"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/leaktest"
)

// at builds an attempt from offsets in ms after t0.
func at(t0 time.Time, startMS, endMS int, src string) attempt {
	a := attempt{start: t0.Add(time.Duration(startMS) * time.Millisecond), end: t0.Add(time.Duration(endMS) * time.Millisecond), src: src}
	if src == "" {
		a.err = "i/o timeout"
	}
	return a
}

func TestSteadyRun(t *testing.T) {
	t0 := time.Now()
	g1, g2 := "127.0.0.2", "127.0.0.3"
	for _, tc := range []struct {
		name    string
		as      []attempt
		src     string
		sinceMS int
		n       int
	}{
		{"after a failure", []attempt{at(t0, 0, 1, ""), at(t0, 10, 11, g1), at(t0, 20, 21, g1)}, g1, 10, 2},
		{"after another source", []attempt{at(t0, 0, 1, g1), at(t0, 10, 11, g2), at(t0, 20, 21, g2)}, g2, 10, 2},
		{"all", []attempt{at(t0, 0, 1, g1), at(t0, 10, 11, g1)}, g1, 0, 2},
		{"last failed", []attempt{at(t0, 0, 1, g1), at(t0, 10, 210, "")}, "", -1, 0},
		{"none", nil, "", -1, 0},
	} {
		src, since, n := steadyRun(tc.as)
		wantSince := time.Time{}
		if tc.sinceMS >= 0 {
			wantSince = t0.Add(time.Duration(tc.sinceMS) * time.Millisecond)
		}
		if src != tc.src || n != tc.n || !since.Equal(wantSince) {
			t.Errorf("%s: steadyRun = %q, %v, %d; want %q, +%dms, %d", tc.name, src, since.Sub(t0), n, tc.src, tc.sinceMS, tc.n)
		}
	}
}

func TestOutageAfter(t *testing.T) {
	t0 := time.Now()
	kill := t0.Add(100 * time.Millisecond)
	dead, other := "127.0.0.2", "127.0.0.3"
	as := []attempt{
		at(t0, 0, 2, dead),      // before the kill
		at(t0, 90, 290, ""),     // in flight at the kill: not counted
		at(t0, 101, 103, dead),  // the dying gateway still answered: not the new path
		at(t0, 110, 310, ""),    // failed
		at(t0, 160, 360, ""),    // failed
		at(t0, 310, 510, ""),    // failed, the last before the path came back
		at(t0, 900, 904, other), // later success
		at(t0, 850, 853, other), // first success (earliest end)
		at(t0, 860, 1060, ""),   // started after the first success: not counted
	}
	sortAttempts(as)
	r, ok := outageAfter(as, kill, dead)
	if !ok {
		t.Fatal("no outage end found")
	}
	if r.outage != 753*time.Millisecond || r.failed != 3 || r.uncertainty != 540*time.Millisecond || r.from != dead || r.to != other {
		t.Errorf("outageAfter = %+v; want outage 753ms, 3 failed, uncertainty 540ms, %s → %s", r, dead, other)
	}
	// No success after the kill yet.
	if _, ok := outageAfter(as[:6], kill, dead); ok {
		t.Error("outage ended without a success through the other gateway")
	}
	// A first success with no failure before it: the uncertainty is from
	// the kill.
	r, ok = outageAfter([]attempt{at(t0, 120, 122, other)}, kill, dead)
	if !ok || r.failed != 0 || r.outage != 22*time.Millisecond || r.uncertainty != 20*time.Millisecond {
		t.Errorf("instant failover: %+v, %v", r, ok)
	}
}

func TestDrainSummary(t *testing.T) {
	t0 := time.Now()
	drainAt := t0.Add(100 * time.Millisecond)
	drained, other := "127.0.0.2", "127.0.0.3"
	clean := []attempt{
		at(t0, 0, 2, drained), // before: not counted
		at(t0, 95, 105, drained),
		at(t0, 110, 112, drained), // the drain not yet seen
		at(t0, 130, 134, other),   // switched: 34 ms
		at(t0, 150, 152, other),
		at(t0, 170, 172, other),
		at(t0, 190, 192, other),
		at(t0, 210, 212, other),
	}
	o := drainSummary(clean, drainAt, drained)
	if o.attempts != 7 || o.failed != 0 || o.switched != 34*time.Millisecond || !o.settled || len(o.fails) != 0 {
		t.Errorf("clean drain: %+v", o)
	}
	failing := append([]attempt{}, clean...)
	failing[4] = at(t0, 150, 1150, "")
	if o := drainSummary(failing, drainAt, drained); o.failed != 1 || o.settled || len(o.fails) != 1 || o.fails[0] != failing[4] {
		t.Errorf("a failed connection: %+v; want 1 failed, not settled (a failure among the last)", o)
	}
	if o := drainSummary(clean[:7], drainAt, drained); o.settled {
		t.Errorf("settled with fewer than %d connections after the drain: %+v", settleCount, o)
	}
	if o := drainSummary(clean[:3], drainAt, drained); o.switched != 0 {
		t.Errorf("switched before any connection through the other gateway: %+v", o)
	}
}

func TestFailoverParams(t *testing.T) {
	q, f := failoverParamsFor(true), failoverParamsFor(false)
	if q.rounds != 1 || q.drainWindow > 3*time.Second {
		t.Errorf("quick failover params are not quick: %+v", q)
	}
	if f.rounds < 3 {
		t.Errorf("full failover params: %d rounds, want ≥ 3", f.rounds)
	}
	for _, pc := range []probeConfig{q.kill, f.kill} {
		// An attempt must give up before the kernel retransmits its SYN
		// (1 s), or a lost SYN would hide when the path came back.
		if pc.timeout >= time.Second || pc.every <= 0 || pc.limit <= 0 {
			t.Errorf("kill probe config %+v", pc)
		}
		// Enough clients that no start is skipped while every attempt
		// times out.
		if time.Duration(pc.workers)*pc.every < pc.timeout+pc.every {
			t.Errorf("kill probe config %+v: %d clients cannot start one every %v with %v timeouts", pc, pc.workers, pc.every, pc.timeout)
		}
	}
}

func TestProber(t *testing.T) {
	leaktest.Check(t)
	srv := startTestSrcServer(t)
	p := startProber(nil, probeConfig{addr: srv.Addr(), workers: 2, every: 5 * time.Millisecond, timeout: 2 * time.Second, limit: 10 * time.Second})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if src, _, n := steadyRun(p.attempts()); n >= 10 {
			if src != "127.0.0.1" {
				t.Fatalf("steady through %q, want 127.0.0.1", src)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no 10 steady attempts: %+v", p.attempts())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	as := p.attempts()
	for i := 1; i < len(as); i++ {
		if as[i].start.Before(as[i-1].start) {
			t.Fatalf("attempts not by start at %d", i)
		}
	}
	n := len(as)
	if err := p.Close(); err != nil || len(p.attempts()) != n {
		t.Errorf("second Close = %v, attempts %d → %d", err, n, len(p.attempts()))
	}
}

func TestProberPacesFailures(t *testing.T) {
	leaktest.Check(t)
	// A port nothing listens on: every attempt is refused at once, and
	// the client must still wait for the next tick.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	const every = 20 * time.Millisecond
	start := time.Now()
	p := startProber(nil, probeConfig{addr: addr, workers: 1, every: every, timeout: time.Second, limit: 10 * time.Second})
	deadline := start.Add(10 * time.Second)
	for len(p.attempts()) < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d attempts", len(p.attempts()))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	as := p.attempts()
	if most := int(elapsed/every) + 1; len(as) > most {
		t.Errorf("%d attempts in %v: not paced at one per %v", len(as), elapsed, every)
	}
	for _, a := range as {
		if a.ok() || a.err == "" {
			t.Errorf("attempt to a closed port: %+v", a)
		}
	}
}

func TestProberLimit(t *testing.T) {
	leaktest.Check(t)
	srv := startTestSrcServer(t)
	p := startProber(nil, probeConfig{addr: srv.Addr(), workers: 3, every: time.Millisecond, timeout: time.Second, limit: 50 * time.Millisecond})
	// It stops by itself: Close only waits.
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the prober ran past its limit")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if len(p.attempts()) == 0 {
		t.Error("no attempt within the limit")
	}
}

func TestProberSkipsWhenBusy(t *testing.T) {
	leaktest.Check(t)
	// A listener that never answers: the kernel completes the handshake,
	// the source line never comes, every attempt lasts its timeout.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := startProber(nil, probeConfig{addr: ln.Addr().String(), workers: 1, every: 5 * time.Millisecond, timeout: 100 * time.Millisecond, limit: 10 * time.Second})
	deadline := time.Now().Add(10 * time.Second)
	for len(p.attempts()) < 2 || p.skips() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d attempts, %d skips", len(p.attempts()), p.skips())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	for _, a := range p.attempts() {
		if a.ok() || a.end.Sub(a.start) < 90*time.Millisecond {
			t.Errorf("attempt to a silent server: %+v", a)
		}
	}
}

func TestAttemptTail(t *testing.T) {
	t0 := time.Now()
	as := []attempt{at(t0, -20, -19, "127.0.0.3"), at(t0, 10, 11, "127.0.0.2"), at(t0, 20, 220, ""), at(t0, 30, 31, "127.0.0.3")}
	as[1].port, as[3].port = 40001, 40003
	got := attemptTail(as, t0, 3)
	want := "last attempts, start after the drain, source, local port: +10ms 127.0.0.2 :40001; +20ms failed :0; +30ms 127.0.0.3 :40003;"
	if got != want {
		t.Errorf("attemptTail:\n got %q\nwant %q", got, want)
	}
	if got := attemptTail(as[:1], t0, 3); got != "last attempts, start after the drain, source, local port: -20ms 127.0.0.3 :0;" {
		t.Errorf("attemptTail of one: %q", got)
	}
}
