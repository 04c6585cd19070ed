//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/poll"
)

type egressShow struct {
	App string `json:"app"`
	IPs []struct {
		IP      string `json:"ip"`
		Gateway string `json:"gateway"`
		Health  string `json:"health"`
		Active  bool   `json:"active"`
		Primary bool   `json:"primary"`
	} `json:"ips"`
}

func (d *daemon) egressShow(t *testing.T, app string) egressShow {
	t.Helper()
	var out []egressShow
	r := d.cli(t, "egress", "show", "--app", app, "--json")
	if r.code != 0 {
		t.Fatalf("egress show: %v", r)
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || len(out) != 1 {
		t.Fatalf("egress show --json: %v\n%s", err, r.stdout)
	}
	return out[0]
}

// activeIP returns the IP egress show marks active, "" if none.
func (e egressShow) activeIP() string {
	for _, ip := range e.IPs {
		if ip.Active {
			return ip.IP
		}
	}
	return ""
}

// seenFrom connects from ns to the internet's TCP server and returns the
// source address the server saw, or an error.
func seenFrom(ns *netns, in *internet) (string, error) { return seenFromWithin(ns, in, 3) }

// seenFromWithin is seenFrom with a connect timeout of secs seconds.
func seenFromWithin(ns *netns, in *internet, secs int) (string, error) {
	host, port, _ := net.SplitHostPort(in.tcp)
	out, err := ns.run(10*time.Second, "sh", "-c", fmt.Sprintf("echo x | nc -N -w %d %s %s", secs, host, port))
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, out)
	}
	f := strings.Fields(out)
	if len(f) < 2 || f[0] != "from" {
		return "", fmt.Errorf("unexpected answer %q", out)
	}
	return f[1], nil
}

// TestDedicatedEgress: an app with dedicated egress leaves through one of
// its two IPs on two gateways, others through their node; a killed
// gateway is failed away from; a drained one gets no new flows and a
// connection loop sees no failure.
func TestDedicatedEgress(t *testing.T) {
	need(t)
	allowPing(t)
	in := startInternet(t)
	keyFile := newClusterKey(t)
	start := func(name, join string, extra ...string) (*daemon, int) {
		// LAN timings: memberlist takes ~6 s to declare a node dead, so a
		// failover within the bound below is the workers' overlay probes
		// at work.
		return startNode(t, name, keyFile, join, append([]string{"--gossip-timing", "lan", "--egress-allow-loopback"}, extra...)...)
	}
	mport := freePort(t)
	wm := metricsURL(fmt.Sprintf("http://127.0.0.1:%d", mport))
	w, wp := start("w", "", "--metrics-listen", fmt.Sprintf("127.0.0.1:%d", mport))
	seed := fmt.Sprintf("127.0.0.1:%d", wp)
	g1, _ := start("g1", seed, "--egress-ip", "127.0.0.2", "--egress-ip", "127.0.0.3")
	g2, _ := start("g2", seed, "--egress-ip", "127.0.0.4", "--egress-ip", "127.0.0.5")
	poll.UntilNil(t, 15*time.Second, "three alive nodes", func() error {
		for _, d := range []*daemon{w, g1, g2} {
			if st := d.peerStates(t); st["w"] != "alive" || st["g1"] != "alive" || st["g2"] != "alive" {
				return fmt.Errorf("peers %v", st)
			}
		}
		return nil
	})

	pn, appA, appB := newID("pn"), newID("ap"), newID("ap")
	w.mustCLI(t, "egress", "enable", "--app", appA)
	ea := w.egressShow(t, appA)
	if len(ea.IPs) != 2 || ea.IPs[0].Gateway == ea.IPs[1].Gateway {
		t.Fatalf("app A's egress: %+v", ea)
	}
	mine := map[string]string{ea.IPs[0].IP: ea.IPs[0].Gateway, ea.IPs[1].IP: ea.IPs[1].Gateway}

	nsA, nsB := newNetns(t), newNetns(t)
	w.attachOn(t, nsA, pn, appA, "web")
	w.attachOn(t, nsB, pn, appB, "web")
	loopbackOut(t, nsA)
	loopbackOut(t, nsB)

	// B has no dedicated egress: the node's address.
	if src, err := seenFrom(nsB, in); err != nil || src != "127.0.0.1" {
		t.Fatalf("app B left as %q (%v), want the node's 127.0.0.1", src, err)
	}
	// A: its active IP, once the WireGuard sessions to the gateways are up.
	var src string
	poll.UntilNil(t, 20*time.Second, "app A through its gateway", func() error {
		var err error
		src, err = seenFrom(nsA, in)
		return err
	})
	if _, ok := mine[src]; !ok || src != w.egressShow(t, appA).activeIP() {
		t.Fatalf("app A left as %s; its IPs %v, active %s", src, mine, w.egressShow(t, appA).activeIP())
	}
	active := map[string]*daemon{"g1": g1, "g2": g2}[mine[src]]

	// A refused port through the gateway's NAT is a RST in the container.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, closed, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	if out, err := nsA.run(15*time.Second, "nc", "-v", "-z", "-w", "5", "127.0.0.1", closed); err == nil || !strings.Contains(out, "refused") {
		t.Fatalf("closed port through the gateway: %v\n%s", err, out)
	}

	// Drain the active gateway: a loop of short connections sees no
	// failure, and ends on the other IP.
	active.mustCLI(t, "gateway", "drain")
	failures, last := 0, ""
	for i := 0; i < 20; i++ {
		s, err := seenFrom(nsA, in)
		if err != nil {
			failures++
			t.Logf("connection %d during drain: %v", i, err)
			continue
		}
		last = s
		time.Sleep(100 * time.Millisecond)
	}
	if failures != 0 || last == src {
		t.Fatalf("during drain: %d failed connections, last source %s (drained %s)", failures, last, src)
	}
	active.mustCLI(t, "gateway", "undrain")

	// Kill -9 the gateway now carrying A: new connections succeed through
	// the other within a bounded time.
	// After the undrain the worker moves new flows back to the undrained
	// primary (src's): wait until its active-gateway gauge and new
	// connections say so, so that the gateway killed is the one carrying
	// new flows.
	gwLabels := func(ip string) map[string]string {
		return labels("app", appA, "egress_ip", ip, "gateway", mine[ip])
	}
	var cur string
	var before scrape
	poll.UntilNil(t, 10*time.Second, "the worker's active gateway to settle after the undrain", func() error {
		var err error
		if cur, err = seenFrom(nsA, in); err != nil {
			return err
		}
		before = wm.scrape(t)
		if got := before.value("vrouter_egress_gateway_active", gwLabels(src)); got != 1 {
			return fmt.Errorf("the undrained %s's active gauge is %v", src, got)
		}
		if cur != src {
			return fmt.Errorf("a new connection left as %s, not the undrained %s", cur, src)
		}
		if s, err := seenFrom(nsA, in); err != nil || s != cur {
			return fmt.Errorf("the next connection left as %s (%v), not %s", s, err, cur)
		}
		return nil
	})
	victim := map[string]*daemon{"g1": g1, "g2": g2}[mine[cur]]
	failoversBefore := before.value("vrouter_egress_failovers_total", labels("app", appA))
	if failoversBefore < 1 {
		t.Errorf("the drain moved app A's new flows, yet vrouter_egress_failovers_total is %v", failoversBefore)
	}
	victim.kill(t)
	killed := time.Now()
	var after string
	// Connections are tried with a 1 s timeout: one started before the
	// worker noticed hangs that long, which bounds the measurement's error.
	poll.UntilNil(t, 10*time.Second, "a new connection after the gateway died", func() error {
		s, err := seenFromWithin(nsA, in, 1)
		if err != nil {
			return err
		}
		if s == cur {
			return fmt.Errorf("still through the dead gateway's %s", s)
		}
		after = s
		return nil
	})
	outage := time.Since(killed)
	t.Logf("failover: new connections through %s %v after kill -9 of the gateway of %s", after, outage.Round(10*time.Millisecond), cur)
	if outage > 2500*time.Millisecond {
		t.Fatalf("failover took %v", outage)
	}
	if _, ok := mine[after]; !ok {
		t.Fatalf("after failover app A left as %s, not one of its IPs %v", after, mine)
	}
	defer func() {
		if t.Failed() {
			for _, l := range strings.Split(wm.scrape(t).text, "\n") {
				if strings.HasPrefix(l, "vrouter_egress_") && !strings.HasPrefix(l, "vrouter_egress_flows") {
					t.Log(l)
				}
			}
		}
	}()
	poll.UntilNil(t, 10*time.Second, "the worker's metrics to show the failover", func() error {
		s := wm.scrape(t)
		fo := s.value("vrouter_egress_failovers_total", labels("app", appA))
		if fo <= failoversBefore {
			return fmt.Errorf("vrouter_egress_failovers_total %v, was %v", fo, failoversBefore)
		}
		if a, b := s.value("vrouter_egress_gateway_active", gwLabels(after)), s.value("vrouter_egress_gateway_active", gwLabels(cur)); a != 1 || b != 0 {
			return fmt.Errorf("active gauge: %s %v, dead %s %v", after, a, cur, b)
		}
		if h := s.value("vrouter_egress_gateway_healthy", gwLabels(cur)); h != 0 {
			return fmt.Errorf("the dead gateway's %s healthy gauge %v", cur, h)
		}
		return nil
	})
	promtoolCheck(t, wm.scrape(t).text)
}
