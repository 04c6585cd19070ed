//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/poll"
)

// fnv24 is the 24-bit FNV-1a hash a VNI was once taken from as is: what a
// VNI is first derived from.
func fnv24(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32() & 0xffffff
}

// collidingPNs finds two network ids whose 24-bit FNV-1a hashes are
// equal: a birthday search over random ids (about 5 000 on average).
func collidingPNs(t *testing.T) (string, string) {
	t.Helper()
	seen := make(map[uint32]string)
	for range 1 << 20 {
		id := newID("pn")
		h := fnv24(id)
		if other, ok := seen[h]; ok && other != id {
			t.Logf("%s and %s both hash to %#06x (after %d ids)", other, id, h, len(seen)+1)
			return other, id
		}
		seen[h] = id
	}
	t.Fatal("no colliding pair of network ids in 2^20 tries")
	return "", ""
}

// collidingEgress finds an app, a network pnX and another network pnY
// such that the 24-bit hash the app's egress VNI in pnX is derived from
// equals pnY's: an egress VNI and a PN's VNI that would be one VNI if
// they shared the VNI space.
func collidingEgress(t *testing.T) (app, pnX, pnY string) {
	t.Helper()
	app = newID("ap")
	egress := make(map[uint32]string)
	pns := make(map[uint32]string)
	for range 1 << 20 {
		x, y := newID("pn"), newID("pn")
		hx, hy := fnv24("egress\x00"+app+"\x00"+x), fnv24(y)
		egress[hx], pns[hy] = x, y
		if y2, ok := pns[hx]; ok {
			return app, x, y2
		}
		if x2, ok := egress[hy]; ok {
			return app, x2, y
		}
	}
	t.Fatal("no colliding egress and network ids in 2^20 tries")
	return "", "", ""
}

// rxOf reads the vr0 receive counter of every namespace.
func rxOf(t *testing.T, nss ...*netns) map[*netns]uint64 {
	t.Helper()
	m := make(map[*netns]uint64, len(nss))
	for _, n := range nss {
		m[n] = n.rxPackets(t, defaultIfname)
	}
	return m
}

// untouched fails the test for every namespace whose TUN received a
// packet since before.
func untouched(t *testing.T, what string, before map[*netns]uint64) {
	t.Helper()
	for n, rx := range before {
		if got := n.rxPackets(t, defaultIfname); got != rx {
			t.Errorf("%s: %s received %d packets", what, n.name, got-rx)
		}
	}
}

// cannotReach tries ping, a TCP connection and UDP datagrams from one
// namespace to dst, where the namespace behind dst (in another network)
// listens, and fails the test if any of them gets through. The target's
// TUN must not receive a single packet meanwhile.
func cannotReach(t *testing.T, from, target *netns, dst string, port int) {
	t.Helper()
	before := rxOf(t, target)
	if out, ok := ping(t, from, dst, 2); ok || strings.Contains(out, "bytes from") {
		t.Errorf("ping %s from %s crossed networks:\n%s", dst, from.name, out)
	}

	tcp := startBG(t, target, nil, nil, "nc", "-l", "-k", strconv.Itoa(port))
	target.waitListening(t, "t", port)
	// The connect must fail: a handshake completed by anything (the other
	// network's listener, or a netstack of the sender's own side dialing
	// the address from the host) is a crossing. The token proves the
	// other network's listener never got the bytes either.
	tcpToken := "crossed-tcp-" + randomHex(4)
	if out, err := from.run(15*time.Second, "sh", "-c", fmt.Sprintf("echo %s | nc -N -w 2 %s %d", tcpToken, dst, port)); err == nil {
		t.Errorf("TCP connect to %s:%d from %s succeeded: %s", dst, port, from.name, out)
	}
	if strings.Contains(tcp.out.String(), tcpToken) {
		t.Errorf("TCP from %s to %s:%d crossed networks", from.name, dst, port)
	}

	udp := startBG(t, target, nil, nil, "nc", "-u", "-l", strconv.Itoa(port+1))
	target.waitListening(t, "u", port+1)
	token := "crossed-" + randomHex(4)
	if out, err := from.run(15*time.Second, "sh", "-c", fmt.Sprintf("for i in 1 2 3; do echo %s; sleep 0.2; done | nc -u -w 1 %s %d", token, dst, port+1)); err != nil {
		t.Logf("UDP sender in %s: %v %s", from.name, err, out)
	}
	// The datagrams were sent before the sender exited; one that got
	// through would have been written to the target's TUN by now.
	if strings.Contains(tcp.out.String(), token) || strings.Contains(udp.out.String(), token) {
		t.Errorf("UDP from %s to %s:%d crossed networks", from.name, dst, port+1)
	}
	untouched(t, "traffic from "+from.name+" to "+dst, before)
}

// TestVNICollision: two networks whose ids hash to the same VNI, one
// container of each with the same address on two nodes (and a second
// container of each to aim at): ping, TCP and UDP in both directions
// reach nothing of the other network. Then a container of the second
// network next to the first on one node: it reaches its own network on
// the other node (the VNI claims gave the two networks two VNIs) and
// still nothing of the first.
func TestVNICollision(t *testing.T) {
	need(t)
	pnA, pnB := collidingPNs(t)
	keyFile := newClusterKey(t)
	n1, p1 := startNode(t, "n1", keyFile, "")
	n2, _ := startNode(t, "n2", keyFile, fmt.Sprintf("127.0.0.1:%d", p1))
	waitHandshakes(t, n1, n2)

	app := newID("ap")
	a1, a2, b1, b2 := newNetns(t), newNetns(t), newNetns(t), newNetns(t)
	n1.attachOn(t, a1, pnA, app, "web", "--ip", "10.240.0.2")
	n1.attachOn(t, a2, pnA, app, "web", "--ip", "10.240.0.3")
	n2.attachOn(t, b1, pnB, app, "web", "--ip", "10.240.0.2")
	n2.attachOn(t, b2, pnB, app, "web", "--ip", "10.240.0.4")
	poll.UntilNil(t, 10*time.Second, "every container known on both nodes", func() error {
		for _, d := range []*daemon{n1, n2} {
			if n := len(d.containerIPs(t)); n != 4 {
				return fmt.Errorf("%s lists %d containers", d.dir, n)
			}
		}
		return nil
	})

	// Same address, same node: each network reaches its own .2 only.
	before := rxOf(t, a1)
	mustPing(t, b2, "10.240.0.2")
	udpExchange(t, b2, b1, "10.240.0.2", 5411)
	tcpTransfer(t, b2, b1, "10.240.0.2", 5412, 1<<20)
	untouched(t, "pnB's traffic to its own 10.240.0.2", before)
	before = rxOf(t, b1)
	mustPing(t, a2, "10.240.0.2")
	tcpTransfer(t, a2, a1, "10.240.0.2", 5413, 1<<20)
	untouched(t, "pnA's traffic to its own 10.240.0.2", before)

	// Across nodes, both ways: the other network's addresses do not exist.
	cannotReach(t, b1, a2, "10.240.0.3", 5420)
	cannotReach(t, b2, a2, "10.240.0.3", 5422)
	cannotReach(t, a1, b2, "10.240.0.4", 5424)
	cannotReach(t, a2, b2, "10.240.0.4", 5426)

	// pnB next to pnA on n1: the VNI is a claim, so pnB got another one
	// when pnA held their common hash, and n1 learns it from the claims.
	// pnB's container on n1 reaches pnB on n2, still never pnA.
	b3 := newNetns(t)
	n1.attachOn(t, b3, pnB, app, "web", "--ip", "10.240.0.5")
	poll.UntilNil(t, 10*time.Second, "n1's pnB container reaches pnB on n2", func() error {
		if out, ok := ping(t, b3, "10.240.0.4", 1); !ok {
			return fmt.Errorf("ping: %s", lastLine(out))
		}
		return nil
	})
	before = rxOf(t, a1, a2)
	mustPing(t, b3, "10.240.0.2")
	udpExchange(t, b3, b1, "10.240.0.2", 5428)
	tcpTransfer(t, b3, b1, "10.240.0.2", 5429, 1<<20)
	untouched(t, "pnB's traffic from n1 to its 10.240.0.2 on n2", before)
	cannotReach(t, b3, a2, "10.240.0.3", 5430)
	cannotReach(t, a1, b3, "10.240.0.5", 5432)
	if s := n1.status(t); s.Networks != 2 {
		t.Errorf("n1 status networks = %d, want 2", s.Networks)
	}
}

// waitHandshakes waits until every pair of the nodes has a WireGuard
// session.
func waitHandshakes(t *testing.T, nodes ...*daemon) {
	t.Helper()
	poll.UntilNil(t, 20*time.Second, "a WireGuard handshake between every pair of nodes", func() error {
		for _, d := range nodes {
			var ps []peerJSON
			if err := json.Unmarshal([]byte(d.mustCLI(t, "peers", "--json").stdout), &ps); err != nil {
				return err
			}
			alive, shaken := 0, 0
			for _, p := range ps {
				if p.State == "alive" {
					alive++
				}
				if p.LastHandshake != nil {
					shaken++
				}
			}
			if alive != len(nodes) || shaken != len(nodes)-1 {
				return fmt.Errorf("%s: %d alive, %d of %d peers handshaken", d.dir, alive, shaken, len(nodes)-1)
			}
		}
		return nil
	})
}

// TestEgressVNICollision: an app's egress VNI in one network derived from
// the same hash as another network's VNI, that network having containers
// on a gateway of the app. The network keeps its own netstack on the
// gateway (its DNS answers, its egress leaves from the node's address,
// not the app's), the app's containers leave from the app's IP, and
// nothing crosses between the two networks in either direction.
func TestEgressVNICollision(t *testing.T) {
	need(t)
	allowPing(t)
	in := startInternet(t)
	app, pnX, pnY := collidingEgress(t)
	keyFile := newClusterKey(t)
	start := func(name, join string, extra ...string) *daemon {
		d, _ := startNode(t, name, keyFile, join, append([]string{"--egress-allow-loopback"}, extra...)...)
		return d
	}
	w, wp := startNode(t, "w", keyFile, "", "--egress-allow-loopback")
	seed := fmt.Sprintf("127.0.0.1:%d", wp)
	g1 := start("g1", seed, "--egress-ip", "127.0.0.2")
	g2 := start("g2", seed, "--egress-ip", "127.0.0.3")
	waitHandshakes(t, w, g1, g2)
	w.mustCLI(t, "egress", "enable", "--app", app)
	ips := map[string]bool{"127.0.0.2": true, "127.0.0.3": true}

	other := newID("ap")
	x, x4, y, y3 := newNetns(t), newNetns(t), newNetns(t), newNetns(t)
	w.attachOn(t, x, pnX, app, "web", "--ip", "10.240.0.2")
	w.attachOn(t, x4, pnX, app, "web", "--ip", "10.240.0.4")
	g1.attachOn(t, y, pnY, other, "web", "--ip", "10.240.0.2")
	g1.attachOn(t, y3, pnY, other, "web", "--ip", "10.240.0.3")
	for _, n := range []*netns{x, x4, y, y3} {
		loopbackOut(t, n)
	}
	poll.UntilNil(t, 10*time.Second, "every container known everywhere", func() error {
		for _, d := range []*daemon{w, g1, g2} {
			if n := len(d.containerIPs(t)); n != 4 {
				return fmt.Errorf("%s lists %d containers", d.dir, n)
			}
		}
		return nil
	})

	// The app leaves from its own IP through a gateway's NAT.
	poll.UntilNil(t, 20*time.Second, "the app's container through its gateway", func() error {
		src, err := seenFrom(x, in)
		if err != nil {
			return err
		}
		if !ips[src] {
			return fmt.Errorf("left as %s, not one of the app's IPs", src)
		}
		return nil
	})
	// The network on the gateway keeps its own stack: its DNS and its
	// node egress, from the node's address.
	wantA(t, y3, "1.web."+other+"."+pnY+".private-network.internal.", "10.240.0.2")
	if src, err := seenFrom(y, in); err != nil || src != "127.0.0.1" {
		t.Fatalf("pnY's container on the gateway left as %q (%v), want the node's 127.0.0.1", src, err)
	}
	if src, err := seenFrom(x, in); err != nil || !ips[src] {
		t.Fatalf("after pnY's egress, the app's container left as %q (%v)", src, err)
	}

	// pnY on the gateway reaches its own 10.240.0.2, never the app's.
	before := rxOf(t, x)
	mustPing(t, y3, "10.240.0.2")
	udpExchange(t, y3, y, "10.240.0.2", 5431)
	tcpTransfer(t, y3, y, "10.240.0.2", 5432, 1<<20)
	untouched(t, "pnY's traffic to its own 10.240.0.2", before)
	// Nothing crosses, either way.
	cannotReach(t, y3, x4, "10.240.0.4", 5440)
	cannotReach(t, y, x4, "10.240.0.4", 5442)
	cannotReach(t, x, y3, "10.240.0.3", 5444)
	cannotReach(t, x4, y3, "10.240.0.3", 5446)
}
