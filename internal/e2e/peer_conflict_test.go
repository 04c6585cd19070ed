//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/poll"
)

type conflictPeer struct {
	Name     string `json:"name"`
	Conflict string `json:"conflict"`
}

func (d *daemon) peerConflicts(t *testing.T) map[string]string {
	t.Helper()
	var ps []conflictPeer
	if err := json.Unmarshal([]byte(d.mustCLI(t, "peers", "--json").stdout), &ps); err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string)
	for _, p := range ps {
		if p.Conflict != "" {
			out[p.Name] = p.Conflict
		}
	}
	return out
}

// TestDuplicateWireGuardKey: a node started with a copy of another node's
// WireGuard key (a state dir copied to a second host). Every other node
// leaves the two offenders out of its WireGuard peers and reports them
// (peers conflict, status alarm), and traffic between the other nodes
// keeps working, also for nodes that joined after the duplicate.
func TestDuplicateWireGuardKey(t *testing.T) {
	need(t)
	keyFile := newClusterKey(t)
	n1, p1 := startNode(t, "n1", keyFile, "")
	seed := fmt.Sprintf("127.0.0.1:%d", p1)
	n2, _ := startNode(t, "n2", keyFile, seed)
	waitHandshakes(t, n1, n2)

	copyDir := newStateDir(t)
	key, err := os.ReadFile(filepath.Join(n1.dir, "wireguard.key"))
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(copyDir, "wireguard.key")
	if err := os.WriteFile(dst, key, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dst, h.uid, h.gid); err != nil {
		t.Fatal(err)
	}
	n3 := restartNode(t, copyDir, freePort(t), "n3", keyFile, seed)
	n4, _ := startNode(t, "n4", keyFile, seed)

	for _, d := range []*daemon{n2, n4} {
		poll.UntilNil(t, 15*time.Second, "n1 and n3 reported as conflicting", func() error {
			got := d.peerConflicts(t)
			if got["n1"] != "duplicate_wg_key" || got["n3"] != "duplicate_wg_key" || len(got) != 2 {
				return fmt.Errorf("conflicts %v", got)
			}
			return nil
		})
		s := d.status(t)
		alarms := strings.Join(s.Alarms, "\n")
		if !strings.Contains(alarms, "peer n1 left out") || !strings.Contains(alarms, "peer n3 left out") {
			t.Errorf("%s: status alarms %q", s.Node, s.Alarms)
		}
	}
	if got := n1.peerConflicts(t); len(got) != 1 || got["n3"] != "duplicate_wg_key" {
		t.Errorf("n1 reports %v, want n3 (its own key's copy)", got)
	}
	if !strings.Contains(n2.log.String(), "peer left out of the overlay") {
		t.Errorf("n2 did not log the conflict")
	}

	// n2 and n4 still reach each other through WireGuard.
	pn, app := newID("pn"), newID("ap")
	a, b := newNetns(t), newNetns(t)
	n2.attachOn(t, a, pn, app, "web", "--ip", "10.240.0.2")
	n4.attachOn(t, b, pn, app, "web", "--ip", "10.240.0.4")
	poll.UntilNil(t, 20*time.Second, "n2's container reaches n4's", func() error {
		if out, ok := ping(t, a, "10.240.0.4", 1); !ok {
			return fmt.Errorf("ping: %s", lastLine(out))
		}
		return nil
	})
	tcpTransfer(t, a, b, "10.240.0.4", 5461, 1<<20)
	udpExchange(t, b, a, "10.240.0.2", 5462)
	if got := n3.peerConflicts(t); got["n1"] != "duplicate_wg_key" {
		t.Errorf("n3 reports %v, want n1 (the key it copied)", got)
	}
}

// overlayHash is the 22-bit hash a node's first overlay address is taken
// from (the host part in 100.64.0.0/10).
func overlayHash(name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return h.Sum32() & (1<<22 - 1)
}

// TestOverlayAddressCollision: two nodes whose names hash to one overlay
// address. The overlay address is a claim: the second node moves to
// another one, peers see two addresses and no conflict, and containers
// on the two nodes exchange ping, TCP and UDP.
func TestOverlayAddressCollision(t *testing.T) {
	need(t)
	seen := make(map[uint32]string)
	var na, nb string
	for i := 0; na == ""; i++ {
		if i == 1<<20 {
			t.Fatal("no colliding node names in 2^20")
		}
		name := "n-" + randomHex(5)
		if other, ok := seen[overlayHash(name)]; ok && other != name {
			na, nb = other, name
		}
		seen[overlayHash(name)] = name
	}
	t.Logf("%s and %s hash to one overlay address", na, nb)
	keyFile := newClusterKey(t)
	a, pa := startNode(t, na, keyFile, "")
	b, _ := startNode(t, nb, keyFile, fmt.Sprintf("127.0.0.1:%d", pa))

	var overlays map[string]string
	poll.UntilNil(t, 15*time.Second, "two overlay addresses and no conflict", func() error {
		overlays = map[string]string{}
		for _, d := range []*daemon{a, b} {
			var ps []struct {
				Name     string `json:"name"`
				Overlay  string `json:"overlay"`
				Conflict string `json:"conflict"`
				State    string `json:"state"`
			}
			if err := json.Unmarshal([]byte(d.mustCLI(t, "peers", "--json").stdout), &ps); err != nil {
				return err
			}
			for _, p := range ps {
				if p.Conflict != "" || p.State != "alive" {
					return fmt.Errorf("%s: %+v", d.dir, p)
				}
				if o, ok := overlays[p.Name]; ok && o != p.Overlay {
					return fmt.Errorf("%s has %s and %s", p.Name, o, p.Overlay)
				}
				overlays[p.Name] = p.Overlay
			}
		}
		if len(overlays) != 2 || overlays[na] == overlays[nb] {
			return fmt.Errorf("overlays %v", overlays)
		}
		return nil
	})
	t.Logf("overlay addresses %v", overlays)
	if !strings.Contains(a.log.String()+b.log.String(), "overlay address claimed first by another node: moved") {
		t.Error("neither node logged the move")
	}

	pn, app := newID("pn"), newID("ap")
	x, y := newNetns(t), newNetns(t)
	a.attachOn(t, x, pn, app, "web", "--ip", "10.240.0.2")
	b.attachOn(t, y, pn, app, "web", "--ip", "10.240.0.3")
	poll.UntilNil(t, 20*time.Second, "the containers reach each other", func() error {
		if out, ok := ping(t, x, "10.240.0.3", 1); !ok {
			return fmt.Errorf("ping: %s", lastLine(out))
		}
		return nil
	})
	mustPing(t, y, "10.240.0.2")
	tcpTransfer(t, x, y, "10.240.0.3", 5471, 1<<20)
	udpExchange(t, y, x, "10.240.0.2", 5472)
}
