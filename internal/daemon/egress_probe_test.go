package daemon

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/keys"
)

// TestEgressProbe: a gateway whose probe of the outside fails is marked
// unhealthy everywhere and its app's active IP moves to the other gateway;
// when the probe succeeds again it is healthy again.
func TestEgressProbe(t *testing.T) {
	outside, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := netip.MustParseAddrPort(outside.Addr().String())
	keyFile := filepath.Join(t.TempDir(), "cluster.key")
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte(keys.Encode(k)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g1 := startDaemonWith(t, func(c *Config) {
		c.Name, c.ClusterKeyFile, c.Timing = "g1", keyFile, cluster.TimingFast
		c.EgressIPs = mustAddrs("127.0.0.2")
		c.EgressProbe = target
	})
	seed := []string{g1.cluster.LocalAddr().String()}
	g2 := startDaemonNoLeakCheck(t, func(c *Config) {
		c.Name, c.ClusterKeyFile, c.Timing, c.Join = "g2", keyFile, cluster.TimingFast, seed
		c.EgressIPs = mustAddrs("127.0.0.4")
	})
	waitFor(t, "two alive gateways", func() bool { return alive(g1) == 2 && alive(g2) == 2 })
	g2.mustEnable(t, egressAppA)
	// health waits until every node sees g1's IP with health h and the
	// active IP on want.
	health := func(what, h, want string) {
		t.Helper()
		waitFor(t, what, func() bool {
			for _, td := range []*testDaemon{g1, g2} {
				var g1h, active string
				for _, tg := range td.egressTargets(egressAppA) {
					if tg.Gateway == "g1" {
						g1h = map[bool]string{true: "healthy", false: "unhealthy"}[tg.Healthy]
					}
				}
				for _, r := range td.egressShowApp(t, egressAppA).IPs {
					if r.Gateway == "g1" && r.Health != h {
						return false
					}
					if r.Active {
						active = r.Gateway
					}
				}
				if g1h != h || active != want && want != "" {
					return false
				}
			}
			return true
		})
	}
	health("both healthy", "healthy", "")

	outside.Close() // the outside is gone for g1
	health("g1 unhealthy, g2 active", "unhealthy", "g2")
	back, err := net.Listen("tcp", target.String())
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	health("g1 healthy again", "healthy", "")

	if _, err := New(Config{Name: "x", StateDir: t.TempDir(), OpenPort: (&fakePorts{}).open, EgressProbe: target}); err == nil {
		t.Fatal("New accepted a probe without egress IPs")
	}
}

func (td *testDaemon) egressShowApp(t *testing.T, app string) control.EgressApp {
	t.Helper()
	var rows []control.EgressApp
	if err := td.call(t, &control.Request{Op: "egress", Egress: &control.EgressRequest{Action: "show", App: app}}, false, &rows); err != nil || len(rows) != 1 {
		t.Fatalf("show %s: %v %+v", app, err, rows)
	}
	return rows[0]
}
