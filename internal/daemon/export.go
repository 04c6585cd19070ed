package daemon

// Accessors and hooks for tests outside this package (internal/integration
// runs several daemons in one process). Nothing here is used by vrouter
// itself.

import (
	"net"
	"net/netip"

	"github.com/vrouter/vrouter/internal/records"
	"github.com/vrouter/vrouter/router"
)

// GossipAddr is the address other nodes join this node at (the bound port
// when Config.Gossip asked for port 0).
func (d *Daemon) GossipAddr() netip.AddrPort { return d.cluster.LocalAddr() }

// OverlayAddr is the overlay address of the node called name, as every
// daemon derives it.
func OverlayAddr(name string) netip.Addr { return records.OverlayAddr(name) }

// WireGuardPeers returns the peers configured on the node's WireGuard
// device. A test that dials this node from a WireGuard device of its own
// waits until its key is listed: an initiation that arrives earlier is
// dropped, and wireguard-go retries only after 5 s.
func (d *Daemon) WireGuardPeers() ([]router.WGPeerStatus, error) { return d.wg.Peers() }

// Crash is a test hook simulating kill -9: gossip stops at once, without
// the leave (so peers must detect the death), then everything is released
// as by Close. The claims of the node's containers are not withdrawn:
// peers drop them when memberlist declares the node dead.
func (d *Daemon) Crash() error {
	d.cluster.Kill()
	return d.Close()
}

// MetricsAddr is the address of the metrics listener (the bound port when
// Config.MetricsListen asked for port 0); nil without one.
func (d *Daemon) MetricsAddr() net.Addr {
	if d.metrics == nil {
		return nil
	}
	return d.metrics.Addr()
}
