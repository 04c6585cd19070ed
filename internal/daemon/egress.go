package daemon

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"

	"github.com/vrouter/vrouter/internal/egress"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/stack"
)

// hostAddrs returns the addresses of the host's interfaces.
func hostAddrs() ([]netip.Addr, error) {
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range ifaddrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}

// checkEgressIPs refuses egress IPs that this host cannot send from: a
// gateway binds its NAT sockets to them. The test is a bind, which is what
// the NAT will do (it also accepts the whole of 127.0.0.0/8, as Linux
// does, so the loopback stand-ins of tests work).
func checkEgressIPs(ips []netip.Addr) error {
	for _, ip := range ips {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		if err != nil {
			return fmt.Errorf("egress IP %s is not an address of this host (add it first, e.g. ip addr add %s/32 dev lo): %w", ip, ip, err)
		}
		c.Close()
	}
	return nil
}

// egressConfig is the node egress (packet path 4) of every network's
// stack: flows leave from host sockets with the node's own address; the
// node's own addresses are never destinations (they would reach the
// node's services as if from the node itself). All of them share the
// node's budget; the caller names the network (its share).
func (d *Daemon) egressConfig() *stack.EgressConfig {
	return &stack.EgressConfig{
		AllowLoopback:        d.cfg.EgressAllowLoopback,
		Deny:                 d.deny,
		DenyPrefixes:         d.cfg.EgressDeny,
		LoopbackServicePorts: d.loopbackServicePorts(),
		Budget:               d.budget,
		Logger:               d.log.With("component", "egress"),
	}
}

// loopbackServicePorts are the ports the daemon's own services listen on
// where a container could reach them with --egress-allow-loopback: the
// profiler and the metrics (no authentication, AUDIT D13e) and gossip.
func (d *Daemon) loopbackServicePorts() []uint16 {
	var ports []uint16
	for _, ap := range []netip.AddrPort{d.cfg.DebugListen, d.cfg.MetricsListen, d.cluster.LocalAddr()} {
		if ap.IsValid() && ap.Port() != 0 && (ap.Addr().IsLoopback() || ap.Addr().IsUnspecified()) {
			ports = append(ports, ap.Port())
		}
	}
	return ports
}

// egressStatusLocked sums the egress counters of the networks' stacks.
// Callers hold d.mu.
func (d *Daemon) egressStatusLocked() map[string]uint64 {
	var sum stack.EgressStats
	for _, ns := range d.stacks {
		addEgress(&sum, ns.stack.EgressStats())
	}
	return map[string]uint64{
		"tcp_dials": sum.TCPDials, "tcp_refused": sum.TCPRefused, "tcp_failed": sum.TCPFailed,
		"tcp_active": sum.TCPActive, "udp_flows": sum.UDPFlows, "udp_active": sum.UDPActive,
		"pings_sent": sum.PingsSent, "ping_replies": sum.PingReplies, "ping_errors": sum.PingErrors,
		"denied": sum.Denied, "limited": sum.Limited,
		"deny_addrs": uint64(d.deny.Len()), "deny_refreshes": d.addrRefreshes.Load(),
	}
}

// localApps is the registry as dedicated egress reads it.
type localApps struct{ d *Daemon }

func (l localApps) Apps() []string {
	l.d.mu.Lock()
	defer l.d.mu.Unlock()
	return slices.Collect(maps.Keys(l.d.reg.byApp))
}

func (l localApps) AppNets() []egress.AppNet {
	l.d.mu.Lock()
	defer l.d.mu.Unlock()
	return slices.Collect(maps.Keys(l.d.reg.appNets))
}

func (l localApps) Containers(apps []string) []egress.Local {
	l.d.mu.Lock()
	defer l.d.mu.Unlock()
	var out []egress.Local
	for _, app := range apps {
		for _, c := range l.d.reg.byApp[app] {
			out = append(out, c.local())
		}
	}
	return out
}

func (l localApps) NetworkVNI(pn string) (uint32, bool) {
	l.d.mu.Lock()
	defer l.d.mu.Unlock()
	if n := l.d.reg.networks[pn]; n != nil {
		return n.vni, true
	}
	return 0, false
}

// local is c as dedicated egress sees it.
func (c *container) local() egress.Local {
	return egress.Local{ID: c.info.ID, App: c.info.App, Network: c.info.Network, Port: c.attached}
}

// newNAT starts a gateway's NAT of one app's IP for one network's egress
// VNI: a netstack whose node egress leaves from that IP.
func (d *Daemon) newNAT(vni uint32, ip netip.Addr) (egress.NAT, error) {
	eg := d.egressConfig()
	eg.Source = ip
	// Each app's NAT for each network is a tenant of the budget.
	eg.Network = fmt.Sprintf("gateway %d", vni)
	rt := d.router
	st, err := stack.New(stack.Config{
		Name:     "egress " + ip.String(),
		Addr:     router.DefaultResolver,
		MTU:      d.cfg.MTU,
		Headroom: router.Headroom,
		Output:   func(bufs [][]byte, offset int) { rt.WriteLocal(vni, bufs, offset) },
		Egress:   eg,
		Logger:   d.log.With("component", "gateway", "egress_ip", ip),
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}
