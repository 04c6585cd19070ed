package integration

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/daemon"
	"github.com/vrouter/vrouter/internal/keys"
	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/internal/poll"
	"github.com/vrouter/vrouter/internal/records"
	"github.com/vrouter/vrouter/stack/stacktest"
)

// The two private networks of the multi-node test.
const (
	mnPN1 = "pn-5e2a7c10-3b4d-4f6a-8c9e-0a1b2c3d4e5f"
	mnPN2 = "pn-9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a"
)

// Ports the containers' servers listen on.
const (
	mnUDPPort = 5353
	mnTCPPort = 8080
)

// TestMultiNodeInProcess runs three vrouter daemons in this process over
// loopback (memberlist gossip and WireGuard UDP on 127.0.0.1), with gVisor
// containers attached through their control sockets:
//
//	n1: c1 pn1 10.240.0.1
//	n2: c2 pn1 10.240.0.2, c4 pn2 10.240.0.1 (c1's address, other network)
//	n3: c3 pn1 10.240.0.3
//
// plus a key-holding impostor ("a-forger") and a node with another key.
// The subtests run in order and share the nodes; the last one kills n3.
func TestMultiNodeInProcess(t *testing.T) {
	leaktest.Check(t)
	keyFile := writeClusterKey(t)
	key := readClusterKey(t, keyFile)

	n1 := startNode(t, "n1", keyFile)
	n2 := startNode(t, "n2", keyFile, n1.d.GossipAddr())
	n3 := startNode(t, "n3", keyFile, n1.d.GossipAddr())
	// Another cluster's node: its own generated key.
	bad := startNode(t, "n4-wrong-key", "", n1.d.GossipAddr())
	nodes := []*mnNode{n1, n2, n3}
	poll.Until(t, 10*time.Second, "n1, n2, n3 to see each other alive", func() bool {
		for _, n := range nodes {
			if alivePeers(t, n) != 3 {
				return false
			}
		}
		return true
	})

	c1, c1Info := n1.attach(t, mnPN1, "10.240.0.1")
	c2, _ := n2.attach(t, mnPN1, "10.240.0.2")
	c3, c3Info := n3.attach(t, mnPN1, "10.240.0.3")
	c4, _ := n2.attach(t, mnPN2, "10.240.0.1")
	_, badInfo := bad.attach(t, mnPN1, "10.240.0.5")
	poll.Until(t, 10*time.Second, "every node to list the 4 containers", func() bool {
		for _, n := range nodes {
			if len(n.containersOp(t)) != 4 {
				return false
			}
		}
		return true
	})
	udp := map[string]*udpServer{}
	tcp := map[string]*tcpServer{}
	for label, c := range map[string]*node{"c1": c1, "c2": c2, "c3": c3, "c4": c4} {
		udp[label] = startUDPServer(t, c, mnUDPPort, label)
		tcp[label] = startTCPServer(t, c, mnTCPPort, label)
	}

	t.Run("cross-node", func(t *testing.T) {
		// The first packets wait for gossip to reach the routers and for
		// the WireGuard handshakes (the lower name dials after 1 s).
		for _, p := range []struct {
			from *node
			to   netip.Addr
		}{{c1, c2.Addr()}, {c1, c3.Addr()}, {c3, c2.Addr()}} {
			pingUntilReply(t, p.from, p.to, 15*time.Second)
		}
		data := make([]byte, 384<<10)
		rand.Read(data)
		got, err := tcpSend(c1, netip.AddrPortFrom(c3.Addr(), mnTCPPort), data)
		if err != nil {
			t.Fatalf("tcp c1 → c3: %v", err)
		}
		if want := wantAnswer("c3", data); got != want {
			t.Errorf("tcp c1 → c3: answer %q, want %q", got, want)
		}
		if seen := tcp["c3"].seen(); len(seen) != 1 || seen[0].Addr() != c1.Addr() {
			t.Errorf("c3's tcp server saw %v, want one client %v", seen, c1.Addr())
		}
		for _, p := range []struct {
			from, to *node
			label    string // to's server
		}{{c2, c3, "c3"}, {c3, c2, "c2"}} {
			payload := fmt.Sprintf("udp %v → %v", p.from.Addr(), p.to.Addr())
			got, err := udpRoundTrip(p.from, netip.AddrPortFrom(p.to.Addr(), mnUDPPort), payload)
			if err != nil {
				t.Fatal(err)
			}
			if want := p.label + ":" + payload; got != want {
				t.Errorf("udp answer %q, want %q", got, want)
			}
		}
		for _, d := range udp["c3"].received() {
			if d.from.Addr() != c2.Addr() {
				t.Errorf("c3 received %q from %v", d.payload, d.from)
			}
		}

		// The traffic went through the overlay: encrypted (a handshake
		// with each peer it talked to) and VXLAN en- and decapsulated.
		for _, pair := range [][2]*mnNode{{n1, n2}, {n1, n3}, {n2, n3}, {n3, n2}} {
			p, ok := pair[0].peer(t, pair[1].name)
			if !ok || p.State != "alive" || p.LastHandshake == nil || p.Overlay != daemon.OverlayAddr(pair[1].name).String() {
				t.Errorf("%s's peer %s: %+v (found %v), want alive, handshaken, overlay %v", pair[0].name, pair[1].name, p, ok, daemon.OverlayAddr(pair[1].name))
			}
		}
		for _, n := range nodes {
			st := n.statusOp(t)
			if st.Counters["encapsulated"] == 0 || st.Counters["decapsulated"] == 0 {
				t.Errorf("%s: encapsulated %d, decapsulated %d", n.name, st.Counters["encapsulated"], st.Counters["decapsulated"])
			}
			if d := st.Drops["forged_source"]; d != 0 {
				t.Errorf("%s: %d forged_source drops among honest nodes", n.name, d)
			}
		}
	})

	t.Run("isolation", func(t *testing.T) {
		// pn2 has no container at .2 or .3 anywhere: n2's router answers
		// for the addresses of pn1's containers with host unreachable, as
		// for any unknown address, and nothing reaches them.
		for _, dst := range []*node{c2, c3} {
			expectUnreachable(t, c4, dst.Addr())
			// A UDP sender learns nothing; n2's verdict is final once
			// counted, so after the count nothing can arrive any more.
			before := n2.statusOp(t).Drops["unknown_destination"]
			const k = 3
			for i := range k {
				if err := sendUDP(c4, netip.AddrPortFrom(dst.Addr(), mnUDPPort), fmt.Sprintf("from pn2 %d", i)); err != nil {
					t.Fatal(err)
				}
			}
			poll.Until(t, 5*time.Second, "n2 to drop pn2's datagrams", func() bool {
				return n2.statusOp(t).Drops["unknown_destination"] >= before+k
			})
		}
		// 10.240.0.1 from c2 is c1 (pn1, on n1), never c4 (pn2, on c2's
		// own node).
		got, err := udpRoundTrip(c2, netip.AddrPortFrom(c1.Addr(), mnUDPPort), "for c1")
		if err != nil {
			t.Fatal(err)
		}
		if got != "c1:for c1" {
			t.Errorf("udp c2 → 10.240.0.1 answered %q, want c1's answer", got)
		}
		data := []byte(strings.Repeat("for c1 over tcp ", 4096))
		got, err = tcpSend(c2, netip.AddrPortFrom(c1.Addr(), mnTCPPort), data)
		if err != nil {
			t.Fatal(err)
		}
		if want := wantAnswer("c1", data); got != want {
			t.Errorf("tcp c2 → 10.240.0.1 answered %q, want %q", got, want)
		}
		if rec := udp["c4"].received(); len(rec) != 0 {
			t.Errorf("c4 (pn2) received %+v", rec)
		}
		if seen := tcp["c4"].seen(); len(seen) != 0 {
			t.Errorf("c4 (pn2) accepted %v", seen)
		}
		for _, label := range []string{"c2", "c3"} {
			for _, d := range udp[label].received() {
				if strings.HasPrefix(d.payload, "from pn2") {
					t.Errorf("%s received %q from pn2 (%v)", label, d.payload, d.from)
				}
			}
		}
	})

	t.Run("forged source", func(t *testing.T) {
		f := startForger(t, "a-forger", key, n1.d.GossipAddr())
		n1Meta := f.dial(t, n1)
		vni := records.VNI(mnPN1)
		// The positive control: a container the forger announced itself
		// is routed and accepted through the same path.
		own := f.add(t, vni, "10.240.0.9")
		f.announce(t, mnPN1, own.Addr())
		if err := f.router.SetRemote(vni, netOf(vni), c1.Addr(), n1Meta.Overlay); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, 10*time.Second, "n1 to list the forger's own container", func() bool {
			return slices.ContainsFunc(n1.containersOp(t), func(c control.Container) bool {
				return c.Node == f.name && c.IP == own.Addr().String()
			})
		})
		pingUntilReply(t, own, c1.Addr(), 15*time.Second)
		if p, ok := n1.peer(t, f.name); !ok || p.LastHandshake == nil {
			t.Fatalf("n1's view of the forger: %+v (found %v), want a handshake", p, ok)
		}

		// Sources the forger does not own: containers of n2 and n3, and an
		// address nobody holds.
		for _, src := range []string{"10.240.0.2", "10.240.0.3", "10.240.1.99"} {
			t.Run(src, func(t *testing.T) {
				fake := f.add(t, vni, src)
				before := n1.statusOp(t)
				forged := "forged from " + src
				if err := sendUDP(fake, netip.AddrPortFrom(c1.Addr(), mnUDPPort), forged); err != nil {
					t.Fatal(err)
				}
				// The frame reached n1 (its decapsulation counted it),
				// which dropped it for its inner source.
				poll.Until(t, 5*time.Second, "n1 to count the forged frame", func() bool {
					return n1.statusOp(t).Drops["forged_source"] >= before.Drops["forged_source"]+1
				})
				// Sent after the forged one was dropped, its arrival shows
				// the forged one is not merely late.
				legit := "legit after " + src
				if err := sendUDP(own, netip.AddrPortFrom(c1.Addr(), mnUDPPort), legit); err != nil {
					t.Fatal(err)
				}
				poll.Until(t, 5*time.Second, "the forger's legit datagram at c1", func() bool {
					return slices.ContainsFunc(udp["c1"].received(), func(d datagram) bool { return d.payload == legit })
				})
				for _, d := range udp["c1"].received() {
					if strings.HasPrefix(d.payload, "forged") {
						t.Errorf("c1 received a forged datagram: %+v", d)
					}
				}
				after := n1.statusOp(t)
				if after.Counters["decapsulated"] <= before.Counters["decapsulated"] {
					t.Errorf("n1 decapsulated %d → %d: the legit datagram did not come through the overlay", before.Counters["decapsulated"], after.Counters["decapsulated"])
				}
			})
		}
	})

	t.Run("wrong key", func(t *testing.T) {
		poll.Until(t, 10*time.Second, bad.name+" to log that it cannot join", func() bool {
			_, ok := bad.log.find("cannot join cluster", "cluster key mismatch")
			return ok
		})
		checkOutsider(t, bad, badInfo, nodes)
		if ps := bad.peersOp(t); len(ps) != 1 || !ps[0].Self {
			t.Errorf("%s sees peers %+v, want only itself", bad.name, ps)
		}
		if cs := bad.containersOp(t); len(cs) != 1 || cs[0].ID != badInfo.ID {
			t.Errorf("%s sees containers %+v, want only its own", bad.name, cs)
		}
	})

	t.Run("node death", func(t *testing.T) {
		if !n1.hasContainer(t, c3Info.ID) || !n2.hasContainer(t, c3Info.ID) {
			t.Fatal("c3 not listed on n1 and n2 before the crash")
		}
		start := time.Now()
		if err := n3.stop(true); err != nil {
			t.Fatalf("crash n3: %v", err)
		}
		poll.Until(t, 10*time.Second, "c3's record to vanish from n1 and n2", func() bool {
			return !n1.hasContainer(t, c3Info.ID) && !n2.hasContainer(t, c3Info.ID)
		})
		t.Logf("c3's record withdrawn %v after n3 crashed", time.Since(start).Round(time.Millisecond))
		for _, n := range []*mnNode{n1, n2} {
			p, ok := n.peer(t, "n3")
			if !ok || p.State != "dead" {
				t.Errorf("%s's view of n3: %+v (found %v), want dead", n.name, p, ok)
			}
		}
		// The router's entry goes with the record (reconcile runs on the
		// same change): poll briefly, then assert exactly.
		poll.Until(t, 5*time.Second, "10.240.0.3 to become unreachable from c1", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			return errors.Is(c1.Ping(ctx, c3.Addr()), stacktest.ErrHostUnreachable)
		})
		expectUnreachable(t, c1, c3.Addr())
		// The survivors still reach each other.
		ctx, cancel := pingCtx()
		defer cancel()
		if err := c1.Ping(ctx, c2.Addr()); err != nil {
			t.Errorf("ping c1 → c2 after n3 died: %v", err)
		}
		if !n1.hasContainer(t, c1Info.ID) || !n2.hasContainer(t, c1Info.ID) {
			t.Error("c1 vanished with n3")
		}
	})

	// Seconds of gossip later, the node with the other key is still out.
	checkOutsider(t, bad, badInfo, []*mnNode{n1, n2})
}

// checkOutsider asserts that none of members lists the node out or its
// container.
func checkOutsider(t *testing.T, out *mnNode, c control.Container, members []*mnNode) {
	t.Helper()
	for _, m := range members {
		if p, ok := m.peer(t, out.name); ok {
			t.Errorf("%s lists %s: %+v", m.name, out.name, p)
		}
		for _, mc := range m.containersOp(t) {
			if mc.ID == c.ID || mc.Node == out.name {
				t.Errorf("%s lists %s's container %+v", m.name, out.name, mc)
			}
		}
	}
}

// alivePeers counts the nodes n's peers op shows alive, itself included.
func alivePeers(t *testing.T, n *mnNode) int {
	t.Helper()
	k := 0
	for _, p := range n.peersOp(t) {
		if p.State == "alive" {
			k++
		}
	}
	return k
}

// pingUntilReply pings dst from n until a reply comes or timeout passes.
// Host unreachable is retried too: it is the answer until gossip has
// installed dst in the router.
func pingUntilReply(t *testing.T, n *node, dst netip.Addr, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	for {
		err := n.Ping(ctx, dst)
		if err == nil {
			t.Logf("ping %v → %v: first reply after %v", n.Addr(), dst, time.Since(start).Round(time.Millisecond))
			return
		}
		if ctx.Err() != nil || !errors.Is(err, stacktest.ErrHostUnreachable) {
			t.Fatalf("ping %v → %v: %v", n.Addr(), dst, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// writeClusterKey writes a new cluster key file, as `vrouter keygen`.
func writeClusterKey(t *testing.T) string {
	t.Helper()
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cluster.key")
	if err := os.WriteFile(path, []byte(keys.Encode(k)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func readClusterKey(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}
