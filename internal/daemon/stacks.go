package daemon

import (
	"fmt"
	"net/netip"

	"github.com/vrouter/vrouter/dns"
	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/stack"
)

// netStack is the netstack of one network with local containers: it
// terminates their traffic to the resolver address (and later egress).
type netStack struct {
	pn    string
	vni   uint32
	stack *stack.Stack
}

// ensureStackLocked gives network n its stack, serving DNS for n, before
// its first container is attached, so that the resolver answers from the
// container's first packet. Callers hold d.mu.
func (d *Daemon) ensureStackLocked(n *network) error {
	if _, ok := d.stacks[n.id]; ok {
		return nil
	}
	vni := n.vni
	rt := d.router
	eg := d.egressConfig()
	eg.Network = n.id
	st, err := stack.New(stack.Config{
		Name:     n.id,
		Addr:     router.DefaultResolver,
		MTU:      d.cfg.MTU,
		Headroom: router.Headroom,
		Output:   func(bufs [][]byte, offset int) { rt.WriteLocal(vni, bufs, offset) },
		// Downloads through node egress: gVisor's TCP hands over 64 KiB
		// segments, which reach a container's vnet_hdr TUN whole.
		GSO:       true,
		OutputGSO: func(bufs [][]byte, offset int) { rt.WriteLocalGSO(vni, bufs, offset) },
		DNS:       d.resolver.Handler(n.id),
		Egress:    eg,
		Logger:    d.log.With("component", "stack", "network", n.id),
	})
	if err != nil {
		return fmt.Errorf("network %s: %w", n.id, err)
	}
	if err := rt.SetLocal(vni, n.id, st, router.LocalOptions{Egress: true}); err != nil {
		st.Close()
		return fmt.Errorf("network %s: %w", n.id, err)
	}
	d.stacks[n.id] = &netStack{pn: n.id, vni: vni, stack: st}
	return nil
}

// staleStacksLocked unhooks the stacks of networks that have no local
// container left and returns them; the caller closes them after releasing
// d.mu (closing waits for DNS requests in flight). Callers hold d.mu.
func (d *Daemon) staleStacksLocked() []*netStack {
	var stale []*netStack
	for pn, ns := range d.stacks {
		if _, ok := d.reg.networks[pn]; ok {
			continue
		}
		d.router.SetLocal(ns.vni, ns.pn, nil, router.LocalOptions{})
		delete(d.stacks, pn)
		// Kept now, under d.mu like the scrape: the network's egress
		// counters never go back (what a closing stack still counts is lost).
		d.obs.retireEgress(ns.stack.EgressStats())
		stale = append(stale, ns)
	}
	return stale
}

func (d *Daemon) closeStacks(stacks []*netStack) {
	for _, ns := range stacks {
		if err := ns.stack.Close(); err != nil {
			d.log.Warn("closing network stack", "network", ns.pn, "err", err)
		}
	}
}

// dnsStatus is the resolver's part of status.
func (d *Daemon) dnsStatus() *control.DNSStatus {
	s := d.resolver.Stats()
	var tcpRefused uint64
	for _, ns := range d.stacks {
		tcpRefused += ns.stack.Stats().DNSTCPRefused
	}
	up := upstreamStrings(d.cfg.DNSUpstreams) // in the order they are tried
	return &control.DNSStatus{
		Resolver:  router.DefaultResolver.String(),
		Upstreams: up,
		Rcodes:    s.Rcodes, // a fresh map per Stats call
		Counters: map[string]uint64{
			"local":           s.Local,
			"forwarded":       s.Forwarded,
			"cache_hits":      s.CacheHits,
			"upstream_errors": s.UpstreamErrors,
			"tcp_retries":     s.TCPRetries,
			"flood":           s.Flood,
			"truncated":       s.Truncated,
			"flood_network":   s.FloodNetwork,
			"tcp_refused":     tcpRefused,
			"rate_dropped":    s.RateDropped,
			"rate_refused":    s.RateRefused,
		},
	}
}

// newResolver builds the DNS resolver every network's stack serves.
func newResolver(cfg *Config, d *Daemon) (*dns.Resolver, error) {
	r, err := dns.New(dns.Config{
		View:      d.view,
		Upstreams: upstreamStrings(cfg.DNSUpstreams),
		Logger:    cfg.Logger.With("component", "dns"),
	})
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	return r, nil
}

func upstreamStrings(ups []netip.AddrPort) []string {
	out := make([]string, 0, len(ups))
	for _, u := range ups {
		out = append(out, u.String())
	}
	return out
}
