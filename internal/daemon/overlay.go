package daemon

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"time"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/records"
	"github.com/vrouter/vrouter/router"
)

// newOverlay starts the embedded WireGuard on the router's overlay device
// and returns the node metadata other nodes need to reach us (the endpoint
// address is filled in once the advertise address is known).
func newOverlay(cfg *Config, rt *router.Router) (*router.WireGuard, cluster.NodeMeta, error) {
	path := filepath.Join(cfg.StateDir, "wireguard.key")
	k, created, err := loadOrCreateKey(path)
	if err != nil {
		return nil, cluster.NodeMeta{}, fmt.Errorf("wireguard key: %w", err)
	}
	if created {
		cfg.Logger.Info("generated a new WireGuard key", "path", path)
	}
	var priv [32]byte // clamped by NewWireGuard and PublicKey
	copy(priv[:], k)
	overlay := records.OverlayAddr(cfg.Name)
	dev, err := rt.EnableOverlay(overlay)
	if err != nil {
		return nil, cluster.NodeMeta{}, fmt.Errorf("overlay: %w", err)
	}
	// Only the port: wireguard-go's bind listens on every address.
	lport := int(cfg.Listen.Port())
	wg, err := router.NewWireGuard(dev, router.WireGuardConfig{PrivateKey: priv, ListenPort: lport, Logger: cfg.Logger.With("component", "wireguard")})
	if err != nil {
		return nil, cluster.NodeMeta{}, fmt.Errorf("wireguard on port %d: %w", lport, err)
	}
	port, err := wg.ListenPort()
	if err != nil {
		wg.Close()
		return nil, cluster.NodeMeta{}, fmt.Errorf("wireguard: %w", err)
	}
	return wg, cluster.NodeMeta{
		WGPublicKey: router.PublicKey(priv),
		WGEndpoint:  netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(port)),
		Overlay:     overlay,
	}, nil
}

// reconcileLoop keeps WireGuard peers and the router's remote entries equal
// to what gossip says, on every change and at least every few seconds (a
// change notification coalesces bursts and may be missed while busy).
func (d *Daemon) reconcileLoop(ctx context.Context) {
	defer d.loops.Done()
	// One second: also the pace at which a new peer's endpoint is set (see
	// reconcile), so keep it short.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		d.reconcile()
		select {
		case <-ctx.Done():
			return
		case <-d.cluster.Changes():
		case <-tick.C:
		}
	}
}

// dialDelay is how long a peer must have been alive before this node sends
// it handshakes. Both nodes learn of each other at the same moment; an
// initiation that arrives before the other side has added us as a peer is
// dropped, and wireguard-go retries only after 5 s (RekeyTimeout).
const dialDelay = time.Second

func (d *Daemon) reconcile() {
	d.fence(d.cluster.Store().Fenced())
	d.view.Sync()
	d.egress.Reconcile()
	overlays := make(map[string]netip.Addr)
	var peers []router.WGPeer
	seen := make(map[string]time.Time)
	nodes := d.cluster.Nodes()
	d.claimOverlay(nodes)
	st := d.cluster.Store()
	conflicts := peerConflicts(nodes, func(a netip.Addr) (string, bool) { return records.OverlayHolder(st, a) })
	d.setPeerConflicts(conflicts)
	for _, n := range nodes {
		if n.Self || n.State != cluster.StateAlive || n.Identity != cluster.IdentityOK ||
			!n.Meta.Overlay.IsValid() || n.Meta.WGPublicKey == ([32]byte{}) || conflicts[n.Name] != "" {
			continue
		}
		first, ok := d.firstSeen[n.Name]
		if !ok {
			first = time.Now()
		}
		seen[n.Name] = first
		overlays[n.Name] = n.Meta.Overlay
		p := router.WGPeer{PublicKey: n.Meta.WGPublicKey, Overlay: n.Meta.Overlay}
		// Only the node with the lower name dials: when both sides know an
		// endpoint, their handshakes cross and wireguard-go backs off for
		// 5 s. The other side learns our endpoint from the first handshake.
		// The dialer configures the peer only once it has been alive for
		// dialDelay, and then with endpoint and keepalive together: a peer
		// configured without an endpoint makes wireguard-go try (and fail)
		// a handshake at once, and the next try waits 5 s.
		known := slices.Contains(d.cfg.KnownPeers, n.Name)
		if d.cfg.Name < n.Name || known {
			if !known && time.Since(first) < dialDelay {
				continue
			}
			p.Endpoint = n.Meta.WGEndpoint
			p.Keepalive = true
		}
		peers = append(peers, p)
	}
	d.firstSeen = seen
	if err := d.wg.SetPeers(peers); err != nil {
		d.log.Warn("configure wireguard peers", "err", err)
	}

	d.reconcileRemotes(overlays)
}

// wgStatus returns WireGuard's view of each peer by public key.
func (d *Daemon) wgStatus() map[[32]byte]router.WGPeerStatus {
	out := make(map[[32]byte]router.WGPeerStatus)
	st, err := d.wg.Peers()
	if err != nil {
		return out
	}
	for _, p := range st {
		out[p.PublicKey] = p
	}
	return out
}

func keyString(k [32]byte) string { return base64.StdEncoding.EncodeToString(k[:]) }
