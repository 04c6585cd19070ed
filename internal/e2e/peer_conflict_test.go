//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
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
