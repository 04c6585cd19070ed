package router_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/keys"
	"github.com/vrouter/vrouter/internal/leaktest"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/stack/stacktest"
)

// wgNode is one router with its overlay and WireGuard device on loopback.
type wgNode struct {
	r       *router.Router
	dev     tun.Device
	wg      *router.WireGuard
	pub     [32]byte
	overlay netip.Addr
	port    int
}

func newWGNode(t *testing.T, overlay string) *wgNode {
	t.Helper()
	log := router.NewTestLogger(t)
	n := &wgNode{r: router.New(router.Config{Logger: log}), overlay: netip.MustParseAddr(overlay)}
	t.Cleanup(func() {
		if err := n.r.Close(); err != nil {
			t.Errorf("Router.Close: %v", err)
		}
	})
	dev, err := n.r.EnableOverlay(n.overlay)
	if err != nil {
		t.Fatalf("EnableOverlay: %v", err)
	}
	n.dev = dev
	key, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	n.pub = router.PublicKey(key)
	n.wg, err = router.NewWireGuard(dev, router.WireGuardConfig{PrivateKey: key, Logger: log})
	if err != nil {
		t.Fatalf("NewWireGuard: %v", err)
	}
	t.Cleanup(func() {
		if err := n.wg.Close(); err != nil {
			t.Errorf("WireGuard.Close: %v", err)
		}
	})
	if n.port, err = n.wg.ListenPort(); err != nil || n.port == 0 {
		t.Fatalf("ListenPort = %d, %v", n.port, err)
	}
	return n
}

func (n *wgNode) peer() router.WGPeer {
	return router.WGPeer{
		PublicKey: n.pub,
		Endpoint:  netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(n.port)),
		Overlay:   n.overlay,
		Keepalive: true,
	}
}

// container attaches a gVisor container with addr to network on n.
func (n *wgNode) container(t *testing.T, network uint32, addr string) *stacktest.Container {
	t.Helper()
	c, err := stacktest.New(stacktest.Config{Addr: netip.MustParseAddr(addr)})
	if err != nil {
		t.Fatalf("container %s: %v", addr, err)
	}
	a, err := n.r.AddPort(c.Port(), router.PortConfig{Network: network, PN: pnOf(network), Addr: c.Addr(), Name: addr})
	if err != nil {
		t.Fatalf("AddPort %s: %v", addr, err)
	}
	t.Cleanup(func() {
		a.Close()
		c.Close()
	})
	return c
}

func (n *wgNode) remote(t *testing.T, network uint32, addr string, owner *wgNode) {
	t.Helper()
	if err := n.r.SetRemote(network, pnOf(network), netip.MustParseAddr(addr), owner.overlay); err != nil {
		t.Fatalf("SetRemote(%d, %s): %v", network, addr, err)
	}
}

func TestWireGuardOverlay(t *testing.T) {
	leaktest.Check(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	a := newWGNode(t, "100.64.0.1")
	b := newWGNode(t, "100.64.0.2")
	// Responder first: an initiation to a node that does not know the
	// sender yet is dropped and retried only after 5 s. The responder gets
	// no endpoint (it learns it from the initiation): with one, its
	// keepalive would start a handshake of its own, and initiations that
	// cross each other also end in the 5 s retry.
	pa := a.peer()
	pa.Endpoint = netip.AddrPort{}
	pa.Keepalive = false
	if err := b.wg.SetPeers([]router.WGPeer{pa}); err != nil {
		t.Fatal(err)
	}
	if err := a.wg.SetPeers([]router.WGPeer{b.peer()}); err != nil {
		t.Fatal(err)
	}

	a7, b7 := a.container(t, 7, "10.240.0.1"), b.container(t, 7, "10.240.0.2")
	a8, b8 := a.container(t, 8, "10.240.0.1"), b.container(t, 8, "10.240.0.2")
	for _, nw := range []uint32{7, 8} {
		a.remote(t, nw, "10.240.0.2", b)
		b.remote(t, nw, "10.240.0.1", a)
	}

	t.Run("ping", func(t *testing.T) {
		if err := a7.Ping(ctx, b7.Addr()); err != nil {
			t.Fatalf("ping across nodes: %v", err)
		}
		if err := b8.Ping(ctx, a8.Addr()); err != nil {
			t.Fatalf("ping across nodes in network 8: %v", err)
		}
		for _, n := range []*wgNode{a, b} {
			st, err := n.wg.Peers()
			if err != nil || len(st) != 1 || st[0].LastHandshake.IsZero() || st[0].RxBytes == 0 || st[0].TxBytes == 0 {
				t.Errorf("Peers() = %+v, %v", st, err)
			}
		}
	})

	t.Run("tcp", func(t *testing.T) {
		ln, err := b7.ListenTCP(5000)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		got := make(chan []byte, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				got <- nil
				return
			}
			defer c.Close()
			h := sha256.New()
			io.Copy(h, c)
			got <- h.Sum(nil)
		}()
		data := make([]byte, 1<<20)
		rand.Read(data)
		want := sha256.Sum256(data)
		c, err := a7.DialTCP(ctx, netip.MustParseAddrPort("10.240.0.2:5000"))
		if err != nil {
			t.Fatalf("dial across nodes: %v", err)
		}
		if _, err := c.Write(data); err != nil {
			t.Fatalf("write: %v", err)
		}
		c.Close()
		select {
		case h := <-got:
			if !bytes.Equal(h, want[:]) {
				t.Errorf("sha256 %x, want %x", h, want)
			}
		case <-ctx.Done():
			t.Fatal("transfer timed out")
		}
	})

	t.Run("udp and isolation", func(t *testing.T) {
		// Both networks have 10.240.0.2:9000; each listener must see only
		// its own network's datagram.
		l7, err := b7.ListenUDP(9000)
		if err != nil {
			t.Fatal(err)
		}
		defer l7.Close()
		l8, err := b8.ListenUDP(9000)
		if err != nil {
			t.Fatal(err)
		}
		defer l8.Close()
		for _, s := range []struct {
			c   *stacktest.Container
			msg string
		}{{a7, "seven"}, {a8, "eight"}} {
			conn, err := s.c.DialUDP(netip.MustParseAddrPort("10.240.0.2:9000"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Write([]byte(s.msg)); err != nil {
				t.Fatal(err)
			}
			conn.Close()
		}
		for _, l := range []struct {
			pc   net.PacketConn
			want string
		}{{l7, "seven"}, {l8, "eight"}} {
			l.pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 100)
			n, from, err := l.pc.ReadFrom(buf)
			if err != nil || string(buf[:n]) != l.want {
				t.Fatalf("got %q from %v (%v), want %q", buf[:n], from, err, l.want)
			}
		}
	})

	t.Run("forged source", func(t *testing.T) {
		// 10.240.0.5 is a container of a third node; node A may not send
		// with its address even though A is a valid peer.
		third := netip.MustParseAddr("100.64.0.3")
		if err := b.r.SetRemote(7, pnOf(7), netip.MustParseAddr("10.240.0.5"), third); err != nil {
			t.Fatal(err)
		}
		l, err := b7.ListenUDP(9001)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		before := b.r.Stats()
		pkt := stacktest.UDPPacket(netip.MustParseAddrPort("10.240.0.5:1"), netip.MustParseAddrPort("10.240.0.2:9001"), []byte("forged"))
		frame := router.VXLANFrame(pkt, a.overlay, b.overlay, 7, 16)
		if _, err := b.dev.Write([][]byte{frame}, 16); err != nil {
			t.Fatalf("Overlay.Write: %v", err)
		}
		if after := b.r.Stats(); after.Drops["forged_source"] != before.Drops["forged_source"]+1 {
			t.Errorf("forged frame: drops %v, want forged_source +1", after.Drops)
		}
		// A genuine datagram sent after the forged one must be the first
		// that arrives: counters of the whole router cannot tell, since
		// frames of the earlier subtests may still be in flight.
		conn, err := a7.DialUDP(netip.MustParseAddrPort("10.240.0.2:9001"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write([]byte("genuine")); err != nil {
			t.Fatal(err)
		}
		l.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 100)
		n, from, err := l.ReadFrom(buf)
		if err != nil || string(buf[:n]) != "genuine" {
			t.Errorf("first datagram %q from %v (%v), want the genuine one", buf[:n], from, err)
		}
	})

	t.Run("remove remote", func(t *testing.T) {
		a.r.RemoveRemote(7, pnOf(7), netip.MustParseAddr("10.240.0.2"))
		err := a7.Ping(ctx, b7.Addr())
		if !errors.Is(err, stacktest.ErrHostUnreachable) {
			t.Errorf("ping after RemoveRemote: %v, want host unreachable", err)
		}
		// Network 8 is untouched.
		if err := a8.Ping(ctx, b8.Addr()); err != nil {
			t.Errorf("ping in network 8: %v", err)
		}
	})

	t.Run("peers replaced", func(t *testing.T) {
		if err := a.wg.SetPeers(nil); err != nil {
			t.Fatal(err)
		}
		if st, err := a.wg.Peers(); err != nil || len(st) != 0 {
			t.Errorf("Peers after SetPeers(nil) = %+v, %v", st, err)
		}
	})
}

func TestWireGuardKeys(t *testing.T) {
	// An unclamped key is clamped first, as wg does with any key it reads.
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	k[0], k[31] = 0xff, 0xff
	if router.PublicKey(k) != router.PublicKey(keys.Clamp(k)) {
		t.Errorf("PublicKey(%x) differs from the public key of its clamped form", k)
	}
	// RFC 7748 6.1 test vector.
	var priv [32]byte
	copy(priv[:], mustHex(t, "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
	if got := router.PublicKey(priv); string(got[:]) != string(mustHex(t, "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")) {
		t.Errorf("PublicKey = %x", got)
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestWireGuardDuplicatePeers: peers that share a public key or an overlay
// address are left out and named in the error; every other peer is
// configured (AUDIT D4: one copied key used to freeze the whole set).
func TestWireGuardDuplicatePeers(t *testing.T) {
	leaktest.Check(t)
	a := newWGNode(t, "100.64.0.1")
	good := router.WGPeer{PublicKey: [32]byte{1}, Overlay: netip.MustParseAddr("100.64.0.2")}
	dupKey1 := router.WGPeer{PublicKey: [32]byte{2}, Overlay: netip.MustParseAddr("100.64.0.3")}
	dupKey2 := router.WGPeer{PublicKey: [32]byte{2}, Overlay: netip.MustParseAddr("100.64.0.4")}
	dupOv1 := router.WGPeer{PublicKey: [32]byte{3}, Overlay: netip.MustParseAddr("100.64.0.5")}
	dupOv2 := router.WGPeer{PublicKey: [32]byte{4}, Overlay: netip.MustParseAddr("100.64.0.5")}
	v6 := router.WGPeer{PublicKey: [32]byte{5}, Overlay: netip.MustParseAddr("::1")}
	err := a.wg.SetPeers([]router.WGPeer{dupKey1, good, dupOv1, dupKey2, v6, dupOv2})
	if !errors.Is(err, router.ErrDuplicatePeer) {
		t.Fatalf("SetPeers with duplicates: %v, want ErrDuplicatePeer", err)
	}
	st, perr := a.wg.Peers()
	if perr != nil || len(st) != 1 || st[0].PublicKey != good.PublicKey {
		t.Fatalf("configured peers %+v (%v), want only the one without a duplicate", st, perr)
	}
	// Once the duplicate is gone, its other holder is configured.
	if err := a.wg.SetPeers([]router.WGPeer{good, dupKey1, dupOv2}); err != nil {
		t.Fatal(err)
	}
	if st, _ := a.wg.Peers(); len(st) != 3 {
		t.Fatalf("%d peers after the duplicates left, want 3", len(st))
	}
}
