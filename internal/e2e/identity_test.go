//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/poll"
)

type identityPeer struct {
	Name       string `json:"name"`
	State      string `json:"state"`
	Identity   string `json:"identity"`
	SigningKey string `json:"signing_key"`
}

func (d *daemon) identities(t *testing.T) map[string]identityPeer {
	t.Helper()
	var ps []identityPeer
	if err := json.Unmarshal([]byte(d.mustCLI(t, "peers", "--json").stdout), &ps); err != nil {
		t.Fatal(err)
	}
	out := make(map[string]identityPeer)
	for _, p := range ps {
		out[p.Name] = p
	}
	return out
}

func (d *daemon) clusterCounter(t *testing.T, name string) uint64 {
	t.Helper()
	var st struct {
		Cluster map[string]uint64 `json:"cluster"`
	}
	if err := json.Unmarshal([]byte(d.mustCLI(t, "status", "--json").stdout), &st); err != nil {
		t.Fatal(err)
	}
	v, ok := st.Cluster[name]
	if !ok {
		t.Fatalf("contract: status cluster lacks %q: %v", name, st.Cluster)
	}
	return v
}

// TestIdentityPin: a node reinstalled under a known name (a new state dir,
// so a new signing key) is refused by its peer, visibly, until the operator
// unpins the name; then it is trusted under its new key.
func TestIdentityPin(t *testing.T) {
	key := newClusterKey(t)
	n1, port1 := startNode(t, "n1", key, "")
	seed := fmt.Sprintf("127.0.0.1:%d", port1)
	n2, port2 := startNode(t, "n2", key, seed)
	var first identityPeer
	poll.Until(t, 20*time.Second, "n1 trusts n2", func() bool {
		first = n1.identities(t)["n2"]
		return first.State == "alive" && first.Identity == "ok" && first.SigningKey != ""
	})
	checkOwnedMode(t, filepath.Join(n1.dir, "node.key"), 0o600)
	checkOwnedMode(t, filepath.Join(n1.dir, "pins.json"), 0o600)
	n2.stop(t)

	// The same name from a fresh state dir: another signing key.
	impostor := restartNode(t, newStateDir(t), port2, "n2", key, seed)
	poll.Until(t, 20*time.Second, "n1 refuses n2's new key", func() bool {
		p := n1.identities(t)["n2"]
		return p.Identity == "key_changed" && p.SigningKey == first.SigningKey
	})
	if n := n1.clusterCounter(t, "meta_key_changed"); n == 0 {
		t.Error("status counts no meta_key_changed")
	}
	if p := impostor.identities(t)["n1"]; p.Identity != "ok" {
		t.Errorf("the new n2 does not trust n1: %+v", p)
	}

	expectError(t, n1.cli(t, "peers", "unpin", "nosuch"), 1, "no signing key is pinned")
	expectError(t, n1.cli(t, "peers", "unpin"), 2, "one node name")
	r := n1.mustCLI(t, "peers", "unpin", "n2")
	t.Logf("unpin: %s", r.stdout)
	poll.Until(t, 20*time.Second, "n1 trusts the new n2", func() bool {
		p := n1.identities(t)["n2"]
		return p.Identity == "ok" && p.State == "alive" && p.SigningKey != first.SigningKey
	})
}
