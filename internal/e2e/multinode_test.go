//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/poll"
)

// freePort returns a port that is free for both TCP and UDP on 127.0.0.1
// right now (memberlist needs both on one port).
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

type peerJSON struct {
	Name          string  `json:"name"`
	State         string  `json:"state"`
	LastHandshake *string `json:"last_handshake"`
}

// newClusterKey writes a new cluster key (vrouter keygen) into a file the
// daemon user can read and returns its path.
func newClusterKey(t *testing.T) string {
	t.Helper()
	key := runCLI(t, nil, nil, "keygen")
	if key.code != 0 {
		t.Fatalf("keygen: %v", key)
	}
	keyFile := filepath.Join(newStateDir(t), "cluster.key")
	if err := os.WriteFile(keyFile, []byte(key.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(keyFile, h.uid, h.gid); err != nil {
		t.Fatal(err)
	}
	return keyFile
}

// startNode starts a cluster node as nobody, gossiping on a loopback port.
func startNode(t *testing.T, name, keyFile string, join string, extra ...string) (*daemon, int) {
	t.Helper()
	port := freePort(t)
	return restartNode(t, newStateDir(t), port, name, keyFile, join, extra...), port
}

// restartNode starts a node in an existing state directory on a given
// port, with the fast gossip timings. extra flags come last, so they
// override those defaults (pflag keeps a flag's last value).
func restartNode(t *testing.T, dir string, port int, name, keyFile string, join string, extra ...string) *daemon {
	t.Helper()
	args := []string{"--name", name, "--gossip", fmt.Sprintf("127.0.0.1:%d", port),
		"--cluster-key-file", keyFile, "--gossip-timing", "fast"}
	if join != "" {
		args = append(args, "--join", join)
	}
	d := launchDaemon(t, dir, append(args, extra...)...)
	d.waitRunning(t)
	return d
}

func (d *daemon) peerStates(t *testing.T) map[string]string {
	t.Helper()
	var ps []peerJSON
	if err := json.Unmarshal([]byte(d.mustCLI(t, "peers", "--json").stdout), &ps); err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string)
	for _, p := range ps {
		out[p.Name] = p.State
	}
	return out
}

func (d *daemon) containerIPs(t *testing.T) map[string]string {
	t.Helper()
	var cs []container
	if err := json.Unmarshal([]byte(d.mustCLI(t, "containers", "--json").stdout), &cs); err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string) // network/ip → node
	for _, c := range cs {
		out[c.Network+"/"+c.IP] = c.Node
	}
	return out
}

func (d *daemon) attachOn(t *testing.T, ns *netns, network, app, typ string, extra ...string) container {
	t.Helper()
	args := append([]string{"--netns", ns.path, "--network", network, "--app", app, "--type", typ, "--json"}, extra...)
	r := d.cli(t, "attach", args...)
	if r.code != 0 {
		t.Fatalf("attach: %v", r)
	}
	return decodeContainer(t, []byte(r.stdout))
}

// TestMultiNode runs three daemons (unprivileged, loopback gossip and
// WireGuard) with containers on each: traffic crosses nodes encrypted,
// networks stay isolated across nodes, a node without the key stays out,
// and a killed node's containers are withdrawn everywhere.
func TestMultiNode(t *testing.T) {
	keyFile := newClusterKey(t)
	n1, p1 := startNode(t, "n1", keyFile, "")
	seed := fmt.Sprintf("127.0.0.1:%d", p1)
	n2, _ := startNode(t, "n2", keyFile, seed)
	n3, p3 := startNode(t, "n3", keyFile, seed)
	poll.UntilNil(t, 15*time.Second, "three alive nodes everywhere", func() error {
		for _, d := range []*daemon{n1, n2, n3} {
			st := d.peerStates(t)
			if st["n1"] != "alive" || st["n2"] != "alive" || st["n3"] != "alive" {
				return fmt.Errorf("peers %v", st)
			}
		}
		return nil
	})

	pn1, pn2, app := newID("pn"), newID("pn"), newID("ap")
	ns1, ns2, ns3, ns4 := newNetns(t), newNetns(t), newNetns(t), newNetns(t)
	c1 := n1.attachOn(t, ns1, pn1, app, "web")
	poll.UntilNil(t, 5*time.Second, "n1's container on n2", func() error {
		if n2.containerIPs(t)[pn1+"/"+c1.IP] != "n1" {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	c2 := n2.attachOn(t, ns2, pn1, app, "web")
	c3 := n3.attachOn(t, ns3, pn1, app, "worker")
	// Another network on n2 reuses n1's container address.
	c4 := n2.attachOn(t, ns4, pn2, app, "web", "--ip", c1.IP)
	if c1.IP == c2.IP || c2.IP == c3.IP || c1.IP == c3.IP || c4.IP != c1.IP {
		t.Fatalf("addresses %s %s %s %s: want three distinct in pn1 and pn2 reusing the first", c1.IP, c2.IP, c3.IP, c4.IP)
	}
	poll.UntilNil(t, 5*time.Second, "every container on every node", func() error {
		for _, d := range []*daemon{n1, n2, n3} {
			if n := len(d.containerIPs(t)); n != 4 {
				return fmt.Errorf("%d containers", n)
			}
		}
		return nil
	})

	// WireGuard sessions come up by themselves (keepalives), every pair.
	poll.UntilNil(t, 15*time.Second, "a WireGuard handshake between every pair of nodes", func() error {
		for _, d := range []*daemon{n1, n2, n3} {
			var ps []peerJSON
			if err := json.Unmarshal([]byte(d.mustCLI(t, "peers", "--json").stdout), &ps); err != nil {
				return err
			}
			n := 0
			for _, p := range ps {
				if p.LastHandshake != nil {
					n++
				}
			}
			if n != 2 {
				return fmt.Errorf("%d of 2 peers handshaken", n)
			}
		}
		return nil
	})

	// DNS on every node knows the containers of every node.
	workers := "worker." + app + "." + pn1 + ".private-network.internal."
	wantA(t, ns1, workers, c3.IP)
	wantA(t, ns2, "web."+app+"."+pn1+".private-network.internal.", c1.IP, c2.IP)

	// Across nodes, encrypted by the embedded WireGuard.
	mustPing(t, ns1, c2.IP)
	mustPing(t, ns1, c3.IP)
	mustPing(t, ns3, c2.IP)
	tcpTransfer(t, ns1, ns3, c3.IP, 5301, 8<<20)
	udpExchange(t, ns2, ns3, c3.IP, 5302)

	// Isolation across nodes: pn2 on n2 has only 10.240.0.1 (c4), so pn1's
	// addresses on other nodes are unknown there, and pn1 never reaches c4.
	if out, ok := ping(t, ns4, c2.IP, 2); ok || !strings.Contains(out, "Unreachable") {
		t.Fatalf("pn2 reached pn1's %s:\n%s", c2.IP, out)
	}
	rx := ns4.rxPackets(t, "vr0")
	mustPing(t, ns2, c1.IP) // pn1's .1 on n1, not pn2's .1 on n2
	if got := ns4.rxPackets(t, "vr0"); got != rx {
		t.Fatalf("pn2's container with the same address received %d packets of pn1's traffic", got-rx)
	}

	// A node with another key cannot join: nobody sees it, it sees nobody.
	otherKey := newClusterKey(t)
	rogue, _ := startNode(t, "rogue", otherKey, seed)
	rogue.log.waitContains(t, 10*time.Second, "join refusal", "cluster key mismatch")
	time.Sleep(time.Second) // ~5 gossip rounds of the fast timing
	if st := n1.peerStates(t); len(st) != 3 {
		t.Fatalf("n1 sees %v after a node with the wrong key tried to join", st)
	}
	if st := rogue.peerStates(t); len(st) != 1 {
		t.Fatalf("the node with the wrong key sees %v", st)
	}

	// Kill -9 n3: its container disappears from the others and traffic to
	// it gets host unreachable.
	n3.kill(t)
	poll.UntilNil(t, 10*time.Second, "n3's container withdrawn", func() error {
		for _, d := range []*daemon{n1, n2} {
			if node, ok := d.containerIPs(t)[pn1+"/"+c3.IP]; ok {
				return fmt.Errorf("still listed on a node (owner %s)", node)
			}
		}
		return nil
	})
	// Its DNS records went with it.
	wantStatus(t, ns1, workers, "A", "NXDOMAIN")
	if st := n1.peerStates(t); st["n3"] != "dead" {
		t.Fatalf("n3 state on n1 = %q, want dead", st["n3"])
	}
	if out, ok := ping(t, ns1, c3.IP, 2); ok || !strings.Contains(out, "Unreachable") {
		t.Fatalf("ping to the dead node's container:\n%s", out)
	}
	mustPing(t, ns1, c2.IP) // the survivors still talk

	// n3 comes back with its state directory (same WireGuard key): it is
	// alive again everywhere, and a container attached on it again with the
	// same address is reachable across nodes. Its previous container died
	// with the process (the TUN went with the last fd), so nothing of its
	// previous life may reappear.
	if _, err := os.Stat(filepath.Join(n3.dir, "wireguard.key")); err != nil {
		t.Fatalf("n3's WireGuard key: %v", err)
	}
	n3 = restartNode(t, n3.dir, p3, "n3", keyFile, seed)
	poll.UntilNil(t, 15*time.Second, "n3 alive again everywhere", func() error {
		for _, d := range []*daemon{n1, n2, n3} {
			if st := d.peerStates(t); st["n1"] != "alive" || st["n2"] != "alive" || st["n3"] != "alive" {
				return fmt.Errorf("peers %v", st)
			}
		}
		return nil
	})
	if _, ok := n1.containerIPs(t)[pn1+"/"+c3.IP]; ok {
		t.Fatalf("n3's container of its previous life reappeared on n1")
	}
	c3b := n3.attachOn(t, ns3, pn1, app, "worker", "--ip", c3.IP)
	if c3b.IP != c3.IP {
		t.Fatalf("re-attach on n3 got %s, want %s", c3b.IP, c3.IP)
	}
	poll.UntilNil(t, 15*time.Second, "n1 reaches n3's new container", func() error {
		if out, ok := ping(t, ns1, c3.IP, 1); !ok {
			return fmt.Errorf("ping: %s", lastLine(out))
		}
		return nil
	})
	tcpTransfer(t, ns1, ns3, c3.IP, 5303, 1<<20)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
