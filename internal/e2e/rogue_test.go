//go:build e2e

package e2e

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"log"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/poll"
	"github.com/vrouter/vrouter/internal/records"
)

// rogue is a member holding the cluster key that speaks memberlist and the
// store's wire format by hand: nothing of the cluster package's own checks
// stands between it and the daemons. It gossips whatever messages it is
// given, every gossip round.
type rogue struct {
	ml *memberlist.Memberlist

	mu   sync.Mutex
	msgs [][]byte
}

func (r *rogue) NodeMeta(int) []byte           { return nil }
func (r *rogue) NotifyMsg([]byte)              {}
func (r *rogue) LocalState(bool) []byte        { return nil }
func (r *rogue) MergeRemoteState([]byte, bool) {}
func (r *rogue) GetBroadcasts(overhead, limit int) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out [][]byte
	for _, m := range r.msgs {
		if len(m)+overhead <= limit {
			out = append(out, m)
			limit -= len(m) + overhead
		}
	}
	return out
}

func (r *rogue) send(msgs ...[]byte) {
	r.mu.Lock()
	r.msgs = append(r.msgs, msgs...)
	r.mu.Unlock()
}

func startRogue(t *testing.T, keyFile, seed string) *rogue {
	t.Helper()
	b, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	r := &rogue{}
	mc := memberlist.DefaultLocalConfig()
	mc.Name = "rogue"
	mc.BindAddr, mc.BindPort, mc.AdvertisePort = "127.0.0.1", 0, 0
	mc.SecretKey = key
	mc.GossipInterval = 50 * time.Millisecond
	mc.Delegate = r
	mc.Logger = log.New(io.Discard, "", 0)
	if r.ml, err = memberlist.Create(mc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.ml.Shutdown(); err != nil {
			t.Errorf("rogue shutdown: %v", err)
		}
	})
	if _, err := r.ml.Join([]string{seed}); err != nil {
		t.Fatalf("rogue join: %v", err)
	}
	return r
}

// boot returns a member's BootID from its gossiped metadata.
func (r *rogue) boot(t *testing.T, name string) uint64 {
	t.Helper()
	for _, n := range r.ml.Members() {
		if n.Name != name {
			continue
		}
		var m cluster.NodeMeta
		if err := m.UnmarshalBinary(n.Meta); err != nil {
			t.Fatalf("%s's metadata: %v", name, err)
		}
		return m.BootID
	}
	t.Fatalf("the rogue does not see %s", name)
	return 0
}

// forgedRecord encodes a one-record store message (wire version 2) whose
// signature is garbage.
func forgedRecord(owner, key string, boot, version uint64, claimed int64, value []byte, deleted bool) []byte {
	b := []byte{2, 1, 0, 1} // version, records, count 1
	var flags byte
	if deleted {
		flags = 1
	}
	b = append(b, flags, byte(len(owner)))
	b = append(b, owner...)
	b = append(b, byte(len(key)))
	b = append(b, key...)
	b = binary.BigEndian.AppendUint64(b, boot)
	b = binary.BigEndian.AppendUint64(b, version)
	b = binary.BigEndian.AppendUint64(b, uint64(claimed))
	b = binary.BigEndian.AppendUint16(b, uint16(len(value)))
	b = append(b, value...)
	return append(b, make([]byte, 64)...)
}

// TestRogueMember: a key holder forges a container record in n2's name and
// a tombstone of n2's real container, and gossips a record of its own with
// Claimed=1 and an old-format record. n1 refuses and counts each, and
// lists exactly n2's real container.
func TestRogueMember(t *testing.T) {
	keyFile := newClusterKey(t)
	n1, p1 := startNode(t, "n1", keyFile, "")
	seed := fmt.Sprintf("127.0.0.1:%d", p1)
	n2, _ := startNode(t, "n2", keyFile, seed)
	pn, app := newID("pn"), newID("ap")
	ns := newNetns(t)
	c := n2.attachOn(t, ns, pn, app, "web")
	key := pn + "/" + c.IP
	poll.Until(t, 15*time.Second, "n1 lists n2's container", func() bool { return n1.containerIPs(t)[key] == "n2" })

	r := startRogue(t, keyFile, seed)
	boot := r.boot(t, "n2")
	now := time.Now()
	stolen := netip.MustParseAddr("10.240.3.200")
	value := fmt.Appendf(nil, `{"id":"c-000000000001","app":%q,"type":"web","number":7,"mtu":1390}`, app)
	before := n1.clusterCounter(t, "records_bad_signature")
	beforeVer := n1.clusterCounter(t, "msgs_bad_version")
	old := forgedRecord("n2", records.ContainerKey(pn, stolen), boot, uint64(now.UnixNano()), 1, value, false)
	old[0] = 1 // the unsigned format of before
	r.send(
		forgedRecord("n2", records.ContainerKey(pn, stolen), boot, uint64(now.UnixNano()), now.UnixNano(), value, false),
		forgedRecord("n2", records.ContainerKey(pn, netip.MustParseAddr(c.IP)), boot, uint64(now.Add(time.Hour).UnixNano()), 1, nil, true),
		forgedRecord("rogue", records.ContainerKey(pn, stolen), 1, 1, 1, value, false),
		old,
	)
	poll.Until(t, 15*time.Second, "n1 counts the forgeries", func() bool {
		return n1.clusterCounter(t, "records_bad_signature") >= before+2 &&
			n1.clusterCounter(t, "msgs_bad_version") > beforeVer &&
			n1.clusterCounter(t, "records_unknown_signer") > 0
	})
	for name, d := range map[string]*daemon{"n1": n1, "n2": n2} {
		ips := d.containerIPs(t)
		if len(ips) != 1 || ips[key] != "n2" {
			t.Errorf("%s lists %v, want only n2's %s", name, ips, key)
		}
	}
	if p := n1.identities(t)["rogue"]; p.Identity != "unsigned" {
		t.Errorf("n1 shows the rogue as %+v, want identity unsigned", p)
	}
}
