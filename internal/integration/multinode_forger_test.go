package integration

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/daemon"
	"github.com/vrouter/vrouter/internal/keys"
	"github.com/vrouter/vrouter/internal/poll"
	"github.com/vrouter/vrouter/internal/records"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/stack/stacktest"
)

// forger is a cluster member that holds the key but is no vrouter daemon:
// its own memberlist, router and WireGuard device, wired by hand, so that
// it can put any inner source into the VXLAN frames it sends. It is what a
// compromised node (or a stolen key) looks like to the others.
//
// Teardown (t.Cleanup): its containers are detached and closed first
// (registered later, so run earlier), then it leaves the cluster and closes
// WireGuard and the router.
type forger struct {
	name    string
	router  *router.Router
	wg      *router.WireGuard
	cl      *cluster.Cluster
	overlay netip.Addr
	pub     [32]byte
}

// startForger joins the cluster of seed with key and gossips the metadata
// of its own WireGuard device, so the daemons configure it as a peer.
func startForger(t *testing.T, name string, key []byte, seed netip.AddrPort) *forger {
	t.Helper()
	// Not t.Output(): memberlist's goroutines may log between the end of
	// the subtest and the cleanup that stops them, which the race
	// detector reports. The log is shown if the test fails.
	var buf bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", name)
	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			t.Logf("forger %s log:\n%s", name, buf.String())
			mu.Unlock()
		}
	})
	f := &forger{name: name, overlay: daemon.OverlayAddr(name)}
	f.router = router.New(router.Config{Logger: log.With("component", "router")})
	t.Cleanup(func() {
		if f.cl != nil {
			if err := f.cl.Close(); err != nil {
				t.Errorf("forger cluster close: %v", err)
			}
		}
		if f.wg != nil {
			if err := f.wg.Close(); err != nil {
				t.Errorf("forger wireguard close: %v", err)
			}
		}
		if err := f.router.Close(); err != nil {
			t.Errorf("forger router close: %v", err)
		}
	})
	dev, err := f.router.EnableOverlay(f.overlay)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	f.pub = router.PublicKey(priv)
	f.wg, err = router.NewWireGuard(dev, router.WireGuardConfig{PrivateKey: priv, Logger: log.With("component", "wireguard")})
	if err != nil {
		t.Fatal(err)
	}
	port, err := f.wg.ListenPort()
	if err != nil {
		t.Fatal(err)
	}
	f.cl, err = cluster.New(cluster.Config{
		Name:     name,
		BindAddr: "127.0.0.1",
		Key:      key,
		Meta: cluster.NodeMeta{
			WGPublicKey: f.pub,
			WGEndpoint:  netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)),
			Overlay:     f.overlay,
		},
		Timing:  cluster.TimingFast,
		Logger:  log.With("component", "cluster"),
		Network: &gossipNet,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.cl.Join(ctx, []string{seed.String()}); err != nil {
		t.Fatalf("forger join: %v", err)
	}
	// Like an honest node, it claims its overlay address: peers leave out
	// a node advertising one it does not hold.
	f.cl.Store().Put(records.OverlayKey(f.overlay), []byte(name))
	return f
}

// dial makes target (a daemon) a WireGuard peer with its endpoint, so the
// forger sends the handshake: its name sorts below every daemon's, so no
// daemon dials it. It waits until target has configured the forger as a
// peer, else the first initiation would be lost for 5 s.
func (f *forger) dial(t *testing.T, target *mnNode) cluster.NodeMeta {
	t.Helper()
	var meta cluster.NodeMeta
	poll.Until(t, 10*time.Second, "the forger to see "+target.name, func() bool {
		for _, n := range f.cl.Nodes() {
			if n.Name == target.name && n.State == cluster.StateAlive && n.Meta.WGEndpoint.IsValid() {
				meta = n.Meta
				return true
			}
		}
		return false
	})
	poll.Until(t, 10*time.Second, target.name+" to configure the forger as a WireGuard peer", func() bool {
		ps, err := target.d.WireGuardPeers()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			if p.PublicKey == f.pub {
				return true
			}
		}
		return false
	})
	if err := f.wg.SetPeers([]router.WGPeer{{PublicKey: meta.WGPublicKey, Endpoint: meta.WGEndpoint, Overlay: meta.Overlay}}); err != nil {
		t.Fatal(err)
	}
	return meta
}

// add attaches a new container with addr to the forger's router in vni.
func (f *forger) add(t *testing.T, vni uint32, addr string) *node {
	t.Helper()
	c, err := stacktest.New(stacktest.Config{Addr: netip.MustParseAddr(addr)})
	if err != nil {
		t.Fatal(err)
	}
	n := &node{Container: c, network: vni}
	t.Cleanup(func() {
		n.detach()
		if err := c.Close(); err != nil {
			t.Errorf("close forger container %s: %v", addr, err)
		}
	})
	a, err := f.router.AddPort(c.Port(), router.PortConfig{Network: vni, PN: netOf(vni), Addr: c.Addr(), MTU: c.MTU(), Name: "forger-" + addr})
	if err != nil {
		t.Fatal(err)
	}
	n.attached = a
	return n
}

// announce gossips a container record for addr in pn as the daemons write
// them (internal/records). A key holder may announce containers of its own; the
// daemons then route addr to the forger and accept it as inner source from
// the forger only.
func (f *forger) announce(t *testing.T, pn string, addr netip.Addr) {
	t.Helper()
	rec, err := records.Container{
		ID: "c-f0f0f0f0f0f0", App: mnApp, Type: "forged", Number: 1,
		MTU: router.DefaultMTU, AttachedAt: time.Now().UTC().Truncate(time.Second),
	}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	f.cl.Store().Put(records.ContainerKey(pn, addr), rec)
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
