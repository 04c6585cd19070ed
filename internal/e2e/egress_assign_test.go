//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/poll"
)

// assignedApp is the object of `egress enable --json` and an element of
// `egress show --json`.
type assignedApp struct {
	App string `json:"app"`
	IPs []struct {
		IP      string `json:"ip"`
		Gateway string `json:"gateway"`
		Health  string `json:"health"`
		Active  bool   `json:"active"`
		Primary bool   `json:"primary"`
	} `json:"ips"`
}

var assignedIPKeys = []string{"ip", "gateway", "health", "active", "primary"}

// decodeAssignedApp decodes one app object and checks the contract's keys.
func decodeAssignedApp(t *testing.T, raw []byte) assignedApp {
	t.Helper()
	m := requireKeys(t, "egress app", raw, []string{"app", "ips"})
	var ipList []json.RawMessage
	if err := json.Unmarshal(m["ips"], &ipList); err != nil {
		t.Fatalf("ips of %s: %v", raw, err)
	}
	for _, ip := range ipList {
		requireKeys(t, "egress ip", ip, assignedIPKeys)
	}
	var a assignedApp
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
	return a
}

// render is "IP@GATEWAY:health[:active][:primary] …".
func (a assignedApp) render() string {
	var parts []string
	for _, ip := range a.IPs {
		s := ip.IP + "@" + ip.Gateway + ":" + ip.Health
		if ip.Active {
			s += ":active"
		}
		if ip.Primary {
			s += ":primary"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

// showAssignments returns `egress show --json` of d as app → render().
func (d *daemon) showAssignments(t *testing.T) map[string]string {
	t.Helper()
	out := d.mustCLI(t, "egress", "show", "--json").stdout
	var raw []json.RawMessage
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("egress show --json is not an array: %v: %s", err, out)
	}
	m := make(map[string]string)
	for _, r := range raw {
		a := decodeAssignedApp(t, r)
		m[a.App] = a.render()
	}
	return m
}

func waitAssignments(t *testing.T, what, app, want string, nodes ...*daemon) {
	t.Helper()
	poll.UntilNil(t, 10*time.Second, what, func() error {
		for _, d := range nodes {
			if got := d.showAssignments(t)[app]; got != want {
				return fmt.Errorf("a node shows %q, want %q", got, want)
			}
		}
		return nil
	})
}

// startGatewayNode starts a cluster node with extra flags of run.
func startGatewayNode(t *testing.T, dir string, port int, name, keyFile, join string, egressIPs ...string) *daemon {
	t.Helper()
	var extra []string
	for _, ip := range egressIPs {
		extra = append(extra, "--egress-ip", ip)
	}
	return restartNode(t, dir, port, name, keyFile, join, extra...)
}

// TestEgressAssign runs the control plane of dedicated egress on three
// real daemons: two gateways (127.0.0.2/127.0.0.3 and 127.0.0.4/127.0.0.5)
// and a worker. It checks the CLI contract (JSON keys, one-line errors,
// exit codes), too few gateways, the assignment seen from every node,
// drain/undrain, a gateway restart that keeps its assignment, and
// disable.
func TestEgressAssign(t *testing.T) {
	need(t)
	keyFile := newClusterKey(t)
	p1 := freePort(t)
	seed := fmt.Sprintf("127.0.0.1:%d", p1)
	g1 := startGatewayNode(t, newStateDir(t), p1, "g1", keyFile, "", "127.0.0.2", "127.0.0.3")
	w := startGatewayNode(t, newStateDir(t), freePort(t), "w", keyFile, seed)
	app, other := newID("ap"), newID("ap")

	// One gateway is not enough: a clear error, nothing assigned.
	poll.UntilNil(t, 10*time.Second, "g1 and w alive", func() error {
		if st := w.peerStates(t); st["g1"] != "alive" {
			return fmt.Errorf("peers %v", st)
		}
		return nil
	})
	expectError(t, w.cli(t, "egress", "enable", "--app", app), 1, "dedicated egress needs two gateways with a free egress IP; found 1")
	if rows := w.showAssignments(t); len(rows) != 0 {
		t.Fatalf("show after a refused enable: %v", rows)
	}

	p2 := freePort(t)
	g2 := startGatewayNode(t, newStateDir(t), p2, "g2", keyFile, seed, "127.0.0.4", "127.0.0.5")
	poll.UntilNil(t, 15*time.Second, "three alive nodes everywhere", func() error {
		for _, d := range []*daemon{g1, g2, w} {
			if st := d.peerStates(t); st["g1"] != "alive" || st["g2"] != "alive" || st["w"] != "alive" {
				return fmt.Errorf("peers %v", st)
			}
		}
		return nil
	})

	// Bad input.
	expectError(t, w.cli(t, "egress", "enable"), 2, "needs --app")
	expectError(t, w.cli(t, "egress", "enable", "--app", "ap-nope"), 2, "malformed app id")
	expectError(t, w.cli(t, "egress", "disable", "--app", other), 1, "has no dedicated egress")
	expectError(t, w.cli(t, "egress", "show", "--app", other), 1, "has no dedicated egress")
	expectError(t, w.cli(t, "gateway", "drain"), 1, "not a gateway")

	// Enable on the worker: the lowest IP of each gateway.
	r := w.mustCLI(t, "egress", "enable", "--app", app, "--json")
	a := decodeAssignedApp(t, []byte(r.stdout))
	if a.App != app || len(a.IPs) != 2 || a.IPs[0].Gateway == a.IPs[1].Gateway {
		t.Fatalf("enable: %s", r.stdout)
	}
	got := map[string]string{}
	for _, ip := range a.IPs {
		got[ip.Gateway] = ip.IP
		if ip.Health != "healthy" {
			t.Fatalf("enable: %s not healthy: %s", ip.IP, r.stdout)
		}
	}
	if got["g1"] != "127.0.0.2" || got["g2"] != "127.0.0.4" {
		t.Fatalf("enable gave %v, want 127.0.0.2 on g1 and 127.0.0.4 on g2", got)
	}
	if !a.IPs[0].Primary || !a.IPs[0].Active || a.IPs[1].Primary || a.IPs[1].Active {
		t.Fatalf("enable: want the first IP primary and active: %s", r.stdout)
	}
	row := a.render()
	waitAssignments(t, "the assignment on every node", app, row, g1, g2, w)
	if again := decodeAssignedApp(t, []byte(g2.mustCLI(t, "egress", "enable", "--app", app, "--json").stdout)); again.render() != row {
		t.Fatalf("re-enable on g2: %s, want %s", again.render(), row)
	}
	table := g1.mustCLI(t, "egress", "show", "--app", app).stdout
	if !strings.HasPrefix(table, "APP") || !strings.Contains(table, "GATEWAY") || !strings.Contains(table, "127.0.0.2") || !strings.Contains(table, "127.0.0.4") {
		t.Fatalf("egress show table:\n%s", table)
	}

	// Drain the primary's gateway: the standby becomes active everywhere.
	gws := map[string]*daemon{"g1": g1, "g2": g2}
	prim, stby := a.IPs[0], a.IPs[1]
	dr := gws[prim.Gateway].mustCLI(t, "gateway", "drain", "--json").stdout
	m := requireKeys(t, "gateway state", []byte(dr), []string{"node", "draining", "egress_ips"})
	if string(m["draining"]) != "true" {
		t.Fatalf("drain: %s", dr)
	}
	drained := prim.IP + "@" + prim.Gateway + ":draining:primary " + stby.IP + "@" + stby.Gateway + ":healthy:active"
	waitAssignments(t, "the drain on every node", app, drained, g1, g2, w)
	if out := gws[prim.Gateway].mustCLI(t, "gateway", "undrain").stdout; !strings.Contains(out, "in service") {
		t.Fatalf("undrain: %q", out)
	}
	waitAssignments(t, "the undrain on every node", app, row, g1, g2, w)

	// g1 restarts with its state directory and keeps the assignment.
	g1.terminate(t)
	poll.UntilNil(t, 10*time.Second, "g1's IP dead on w", func() error {
		if s := w.showAssignments(t)[app]; !strings.Contains(s, "127.0.0.2@g1:dead") {
			return fmt.Errorf("w shows %q", s)
		}
		return nil
	})
	g1 = startGatewayNode(t, g1.dir, p1, "g1", keyFile, fmt.Sprintf("127.0.0.1:%d", p2), "127.0.0.2", "127.0.0.3")
	waitAssignments(t, "the assignment after g1's restart", app, row, g1, g2, w)

	// Disable on another node frees both IPs everywhere.
	if out := g2.mustCLI(t, "egress", "disable", "--app", app).stdout; !strings.Contains(out, "127.0.0.2") || !strings.Contains(out, "127.0.0.4") {
		t.Fatalf("disable: %q", out)
	}
	waitAssignments(t, "the app gone everywhere", app, "", g1, g2, w)
	expectError(t, w.cli(t, "egress", "disable", "--app", app), 1, "has no dedicated egress")
}
