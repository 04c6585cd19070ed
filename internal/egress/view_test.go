package egress

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/records"
)

func gwNode(name string, state cluster.NodeState, draining bool, addrs ...string) cluster.Node {
	return cluster.Node{Name: name, State: state, Meta: cluster.NodeMeta{
		Gateway: true, EgressIPs: mustAddrs(addrs...), Draining: draining, Overlay: records.OverlayAddr(name),
	}}
}

func eipEntry(owner, ip, app string, minute int) cluster.Entry {
	a := assigned(ip, app, owner, minute)
	b, _ := json.Marshal(records.EIP{App: app, AssignedAt: a.AssignedAt})
	return cluster.Entry{Key: records.EIPKey(a.IP), Owner: owner, Value: b}
}

// rowString renders one app's row as "IP@GATEWAY:health[:active][:primary] …".
func rowString(r control.EgressApp) string {
	var parts []string
	for _, ip := range r.IPs {
		s := fmt.Sprintf("%s@%s:%s", ip.IP, ip.Gateway, ip.Health)
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

func viewRow(v *view, app string) string {
	for _, r := range v.rows {
		if r.App == app {
			return rowString(r)
		}
	}
	return ""
}

// TestEgressView: health per IP, the primary (oldest assignment) and the
// active IP (primary if healthy, else the healthy standby, else none), and
// the memory of a dead gateway's assignments.
func TestEgressView(t *testing.T) {
	entries := []cluster.Entry{
		eipEntry("g1", "127.0.0.2", egressAppA, 1),
		eipEntry("g2", "127.0.0.4", egressAppA, 0),
		eipEntry("g1", "127.0.0.3", egressAppB, 0),
		eipEntry("g2", "127.0.0.5", egressAppB, 0),
		eipEntry("w", "127.0.0.9", egressAppC, 0),   // not a gateway: ignored
		eipEntry("g1", "127.0.0.4", egressAppC, 0),  // another gateway's IP: ignored
		eipEntry("g2", "127.0.0.77", egressAppC, 0), // not its IP: ignored
	}
	worker := cluster.Node{Name: "w", State: cluster.StateAlive, Self: true}
	tests := []struct {
		name   string
		g1, g2 cluster.Node
		a, b   string
	}{
		{"both healthy",
			gwNode("g1", cluster.StateAlive, false, "127.0.0.2", "127.0.0.3"), gwNode("g2", cluster.StateAlive, false, "127.0.0.4", "127.0.0.5"),
			"127.0.0.4@g2:healthy:active:primary 127.0.0.2@g1:healthy",
			// Same assigned_at: the lower IP is primary.
			"127.0.0.3@g1:healthy:active:primary 127.0.0.5@g2:healthy"},
		{"primary draining: standby active",
			gwNode("g1", cluster.StateAlive, false, "127.0.0.2", "127.0.0.3"), gwNode("g2", cluster.StateAlive, true, "127.0.0.4", "127.0.0.5"),
			"127.0.0.4@g2:draining:primary 127.0.0.2@g1:healthy:active",
			"127.0.0.3@g1:healthy:active:primary 127.0.0.5@g2:draining"},
		{"suspect and draining: none active",
			gwNode("g1", cluster.StateSuspect, false, "127.0.0.2", "127.0.0.3"), gwNode("g2", cluster.StateAlive, true, "127.0.0.4", "127.0.0.5"),
			"127.0.0.4@g2:draining:primary 127.0.0.2@g1:suspect",
			"127.0.0.3@g1:suspect:primary 127.0.0.5@g2:draining"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := buildView("w", []cluster.Node{tt.g1, tt.g2, worker}, entries, map[netip.Addr]assignment{})
			if got := viewRow(v, egressAppA); got != tt.a {
				t.Errorf("app A: %s\n            want %s", got, tt.a)
			}
			if got := viewRow(v, egressAppB); got != tt.b {
				t.Errorf("app B: %s\n            want %s", got, tt.b)
			}
			if len(v.rows) != 2 || v.rows[0].App != egressAppA {
				t.Errorf("rows %+v, want A then B only", v.rows)
			}
			if len(v.local) != 0 {
				t.Errorf("worker holds %v", v.local)
			}
		})
	}

	// The gateways' own view: its local assignments; data path targets.
	g1, g2 := gwNode("g1", cluster.StateAlive, false, "127.0.0.2", "127.0.0.3"), gwNode("g2", cluster.StateAlive, false, "127.0.0.4", "127.0.0.5")
	g1.Self = true
	v := buildView("g1", []cluster.Node{g1, g2}, entries, map[netip.Addr]assignment{})
	if v.local[egressAppA] != netip.MustParseAddr("127.0.0.2") || v.local[egressAppB] != netip.MustParseAddr("127.0.0.3") || len(v.local) != 2 {
		t.Errorf("g1's local = %v", v.local)
	}
	ts := v.apps[egressAppA]
	if len(ts) != 2 || ts[0].IP != netip.MustParseAddr("127.0.0.4") || !ts[0].Primary || ts[1].Primary ||
		ts[0].Overlay != records.OverlayAddr("g2") || !ts[0].Healthy || !ts[1].Healthy {
		t.Errorf("targets of A = %+v", ts)
	}

	// g2 dies: the store hides its records, the view remembers them as dead.
	mem := map[netip.Addr]assignment{}
	buildView("w", []cluster.Node{g1, g2, worker}, entries, mem)
	g2.State = cluster.StateDead
	var alive []cluster.Entry
	for _, e := range entries {
		if e.Owner != "g2" {
			alive = append(alive, e)
		}
	}
	v = buildView("w", []cluster.Node{g1, g2, worker}, alive, mem)
	if got, want := viewRow(v, egressAppA), "127.0.0.4@g2:dead:primary 127.0.0.2@g1:healthy:active"; got != want {
		t.Errorf("after g2's death: %s, want %s", got, want)
	}
	if ts := v.apps[egressAppA]; len(ts) != 2 || ts[0].Healthy || !ts[1].Healthy {
		t.Errorf("targets after g2's death = %+v", ts)
	}
	// g2 back without its records (they were released meanwhile): forgotten.
	g2.State = cluster.StateAlive
	v = buildView("w", []cluster.Node{g1, g2, worker}, alive, mem)
	if got, want := viewRow(v, egressAppA), "127.0.0.2@g1:healthy:active:primary"; got != want {
		t.Errorf("after g2's return: %s, want %s", got, want)
	}
	if len(mem) != 2 {
		t.Errorf("memory holds %v, want g1's two", mem)
	}
}

// TestEgressStolenIP: a member that advertises another gateway's egress IP
// in its own (validly signed) metadata, with an older assignment of it,
// does not become its gateway: the IP is contested and nobody's; and a
// node whose identity did not check out is believed for nothing.
func TestEgressStolenIP(t *testing.T) {
	g2 := gwNode("g2", cluster.StateAlive, false, "127.0.0.4", "127.0.0.5")
	rogue := gwNode("a-rogue", cluster.StateAlive, false, "127.0.0.4", "127.0.0.8")
	entries := []cluster.Entry{
		eipEntry("a-rogue", "127.0.0.4", egressAppB, 0), // sorts first, older
		eipEntry("g2", "127.0.0.4", egressAppA, 5),
		eipEntry("g2", "127.0.0.5", egressAppC, 5),
		eipEntry("a-rogue", "127.0.0.8", egressAppC, 5), // its own IP: believed
	}
	got := liveAssignments([]cluster.Node{rogue, g2}, entries)
	if len(got) != 2 || got[0].IP != netip.MustParseAddr("127.0.0.5") || got[0].Gateway != "g2" ||
		got[1].IP != netip.MustParseAddr("127.0.0.8") || got[1].Gateway != "a-rogue" {
		t.Fatalf("live assignments with a contested IP: %+v", got)
	}
	// Refused identity (e.g. a changed key): its records are not believed,
	// and its metadata contests nothing.
	rogue.Identity = cluster.IdentityKeyChanged
	got = liveAssignments([]cluster.Node{rogue, g2}, entries)
	if len(got) != 2 || got[0].App != egressAppA || got[0].Gateway != "g2" || got[1].Gateway != "g2" {
		t.Fatalf("live assignments with a refused node: %+v", got)
	}
	if c := contestedEgressIPs([]cluster.Node{rogue, g2}); len(c) != 0 {
		t.Fatalf("a refused node contests %v", c)
	}
}

// FuzzEgressView: eip records are peers' bytes. Whatever two gateways and
// a rogue member gossip, the snapshot never panics, never gives an IP to
// two apps or to a node that does not advertise it, and orders each app's
// IPs primary first.
func FuzzEgressView(f *testing.F) {
	good := eipEntry("g1", "127.0.0.2", egressAppA, 1)
	f.Add("g1", good.Key, good.Value, "g2", "eip/127.0.0.4", []byte(`{"app":"`+egressAppB+`","assigned_at":"2025-01-01T00:00:00Z"}`))
	f.Add("rogue", "eip/127.0.0.4", good.Value, "g1", "eip/127.0.0.3", []byte(`{"app":"`+egressAppA+`","assigned_at":"2024-01-01T00:00:00Z"}`))
	f.Add("g2", "eip/", []byte(`{`), "", "", []byte(nil))
	f.Fuzz(func(t *testing.T, o1, k1 string, v1 []byte, o2, k2 string, v2 []byte) {
		nodes := []cluster.Node{
			gwNode("g1", cluster.StateAlive, false, "127.0.0.2", "127.0.0.3"),
			gwNode("g2", cluster.StateDead, false, "127.0.0.4", "127.0.0.5"),
			gwNode("rogue", cluster.StateAlive, false, "127.0.0.4"),
		}
		entries := []cluster.Entry{{Key: k1, Owner: o1, Value: v1}, {Key: k2, Owner: o2, Value: v2}, eipEntry("g1", "127.0.0.3", egressAppC, 2)}
		lastKnown := map[netip.Addr]assignment{}
		for range 2 { // the second pass reads what the first remembered
			v := buildView("g1", nodes, entries, lastKnown)
			byIP := make(map[netip.Addr]string)
			for app, ts := range v.apps {
				for i, tg := range ts {
					if other, dup := byIP[tg.IP]; dup {
						t.Fatalf("%s held by %s and %s", tg.IP, other, app)
					}
					byIP[tg.IP] = app
					if tg.Primary != (i == 0) {
						t.Fatalf("%s: primary at %d", app, i)
					}
					owns := false
					for _, n := range nodes {
						if n.Name == tg.Gateway && slices.Contains(n.Meta.EgressIPs, tg.IP) {
							owns = true
						}
					}
					if !owns || tg.IP == netip.MustParseAddr("127.0.0.4") {
						t.Fatalf("%s given to %s by %s, which does not own it alone", tg.IP, app, tg.Gateway)
					}
				}
			}
			if !slices.IsSortedFunc(v.rows, func(a, b control.EgressApp) int { return strings.Compare(a.App, b.App) }) {
				t.Fatalf("rows not sorted: %v", v.rows)
			}
		}
	})
}
