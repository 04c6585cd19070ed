// Package stack is the node's userspace network stack: a gVisor netstack
// per private network that terminates what the network's containers send to
// the node itself rather than to another container: the resolver address
// (UDP and TCP port 53, answered by a miekg/dns handler, packet path 3 of
// DESIGN.md) and node egress (path 4, egress.go).
//
// One Stack per network keeps networks apart by construction: every
// network uses 10.240.0.0/22, so a shared stack would see two containers
// with the same address as one client. The DNS handler a Stack serves is
// the one for its network, and the client address it sees identifies the
// container inside that network.
//
// Packet flow:
//
//	router port read goroutine → Router.Local.Deliver → Stack.Deliver
//	  → UDP query to the resolver: dnsUDP (dns_udp.go) answers it on this
//	    goroutine (or on one of its own if it needs an upstream)
//	    → Config.Output
//	  → anything else: link.deliver → gVisor (IPv4, UDP/TCP, socket queues)
//	    → mdns.Server goroutines → dns handler, or the egress handlers
//	reply → gVisor → link.WritePackets → the link's queue → the link's
//	  writer goroutine → Config.Output (Router.WriteLocal) → the
//	  container's port
//
// Goroutines: the link's writer; the two DNS servers (UDP and TCP serve
// loops, plus miekg's per-request and per-connection goroutines); the fast
// path's goroutines of queries waiting for an upstream; egress's; and
// gVisor's own protocol goroutines. Close stops all of them.
package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/vrouter/vrouter/internal/offload"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

const (
	nicID tcpip.NICID = 1
	// DNSPort is where the resolver listens, UDP and TCP.
	DNSPort = 53
	// shutdownWait bounds how long Close waits for DNS requests in flight
	// (a forwarded query has a budget of its own, 2 s by default).
	shutdownWait = 5 * time.Second
)

// Config describes a network's stack.
type Config struct {
	// Name identifies the stack in logs (the PN id).
	Name string
	// Addr is the node's address inside the network: the resolver
	// (169.254.20.10 by default). IPv4.
	Addr netip.Addr
	// MTU of the network's ports: the largest packet the stack sends.
	MTU int
	// Headroom is how many bytes Output needs free before each packet
	// (router.Headroom).
	Headroom int
	// Output receives the packets the stack sends to containers, at
	// bufs[i][offset:]. It must not keep the buffers and must not block
	// for long; it is called from gVisor's goroutines, concurrently.
	Output func(bufs [][]byte, offset int)
	// GSO lets gVisor's TCP send segments of up to 64 KiB (host GSO):
	// every packet of the TCP/IP stack then goes to OutputGSO instead of
	// Output, with its virtio-net header at bufs[i][offset-10:offset]
	// (router.WriteLocalGSO's convention; a zero header is a plain
	// packet), and Headroom must be at least 10. Output still gets the
	// DNS fast path's answers.
	GSO       bool
	OutputGSO func(bufs [][]byte, offset int)
	// DNS answers queries to Addr port 53 (UDP and TCP); nil: no resolver.
	DNS mdns.Handler
	// Egress, if set, makes the stack terminate the containers' TCP and
	// UDP flows and pings to destinations outside the network and
	// re-originate them from host sockets (packet path 4, see egress.go).
	Egress *EgressConfig
	// Logger; nil discards.
	Logger *slog.Logger
}

// Stack is one network's netstack. Create it with New.
type Stack struct {
	name  string
	log   *slog.Logger
	stack *stack.Stack
	link  *link

	servers []*mdns.Server
	dnsTCP  *dnsTCPListener // nil without DNS
	serving sync.WaitGroup
	dnsUDP  *dnsUDP // UDP queries answered without gVisor; nil without DNS
	egress  *egress // nil without Config.Egress

	// mu makes Close wait for deliveries in progress and refuse later ones:
	// gVisor must not be torn down under a packet being injected.
	mu     sync.RWMutex
	closed bool
}

// Stats are the stack's counters.
type Stats struct {
	Delivered      uint64 // packets from containers taken by the stack (gVisor or the DNS fast path)
	Sent           uint64 // packets the stack handed to Output
	SendDropped    uint64 // packets larger than the MTU (never expected)
	MalformedRcvd  uint64 // IPv4 packets gVisor found malformed (checksums, lengths)
	TCPEstablished uint64 // TCP connections open now (DNS over TCP)
	UDPQueueDrops  uint64 // datagrams lost to a full socket queue or too many queries waiting for an upstream (a flood)
	DNSFastQueries uint64 // UDP queries to the resolver taken by the fast path (dns_udp.go); part of Delivered
	DNSTCPRefused  uint64 // DNS-over-TCP connections closed at once: the client or the stack had too many open
	// Coalesced counts the TCP segments of overlay batches that reached
	// gVisor merged into larger packets (DeliverBatch, a gateway's NAT).
	Coalesced uint64
}

// New builds the stack and starts its DNS servers.
func New(cfg Config) (*Stack, error) {
	if !cfg.Addr.Is4() {
		return nil, fmt.Errorf("stack %s: address %v is not IPv4", cfg.Name, cfg.Addr)
	}
	if cfg.MTU < header.IPv4MinimumMTU || cfg.MTU > 65535 {
		return nil, fmt.Errorf("stack %s: MTU %d out of range [%d, 65535]", cfg.Name, cfg.MTU, header.IPv4MinimumMTU)
	}
	if cfg.Output == nil {
		return nil, fmt.Errorf("stack %s: no Output", cfg.Name)
	}
	if cfg.Headroom < 0 {
		return nil, fmt.Errorf("stack %s: negative headroom", cfg.Name)
	}
	if cfg.GSO && (cfg.OutputGSO == nil || cfg.Headroom < offload.HdrLen) {
		return nil, fmt.Errorf("stack %s: GSO needs OutputGSO and a headroom of at least %d", cfg.Name, offload.HdrLen)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// IPv4 only: the router carries nothing else. gVisor drops packets to
	// and from 127/8 that arrive on a link as martians; with egress the
	// policy (EgressConfig.AllowLoopback) decides about them instead, so
	// that a refused loopback destination gets a RST, not silence.
	ipv4Proto := ipv4.NewProtocolWithOptions(ipv4.Options{AllowExternalLoopbackTraffic: cfg.Egress != nil})
	gs := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4Proto},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	var outputGSO func([][]byte, int)
	if cfg.GSO {
		outputGSO = cfg.OutputGSO
	}
	l := newGSOLink(uint32(cfg.MTU), cfg.Headroom, cfg.Output, outputGSO)
	if err := configure(gs, l, cfg.Addr); err != nil {
		gs.Destroy()
		return nil, fmt.Errorf("stack %s: %w", cfg.Name, err)
	}
	s := &Stack{name: cfg.Name, log: log, stack: gs, link: l}
	if cfg.DNS != nil {
		if err := s.serveDNS(cfg.Addr, cfg.DNS); err != nil {
			s.Close()
			return nil, fmt.Errorf("stack %s: %w", cfg.Name, err)
		}
	}
	if cfg.Egress != nil {
		if err := s.enableEgress(*cfg.Egress); err != nil {
			s.Close()
			return nil, fmt.Errorf("stack %s: egress: %w", cfg.Name, err)
		}
	}
	return s, nil
}

func configure(gs *stack.Stack, l *link, addr netip.Addr) error {
	if err := gs.CreateNICWithOptions(nicID, l, stack.NICOptions{Name: "pn0"}); err != nil {
		return fmt.Errorf("create NIC: %v", err)
	}
	pa := tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddrFrom4(addr.As4()).WithPrefix(),
	}
	if err := gs.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
		return fmt.Errorf("add address %v: %v", addr, err)
	}
	// Everything goes back through the link: the router decides what is a
	// container of this network and drops the rest.
	gs.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: nicID}})
	return nil
}

// serveDNS listens on addr:53, UDP and TCP, inside the stack.
func (s *Stack) serveDNS(addr netip.Addr, h mdns.Handler) error {
	fa := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFrom4(addr.As4()), Port: DNSPort}
	pc, err := gonet.DialUDP(s.stack, &fa, nil, ipv4.ProtocolNumber)
	if err != nil {
		return fmt.Errorf("dns: listen udp %v:%d: %w", addr, DNSPort, err)
	}
	ln, err := gonet.ListenTCP(s.stack, fa, ipv4.ProtocolNumber)
	if err != nil {
		pc.Close()
		return fmt.Errorf("dns: listen tcp %v:%d: %w", addr, DNSPort, err)
	}
	// Most UDP queries never reach pc: the fast path answers them before
	// gVisor sees them (dns_udp.go). The server still serves the rest
	// (fragmented queries, IP options), and the fast path sends answers
	// larger than the MTU through pc.
	s.dnsUDP = newDNSUDP(addr, int(s.link.mtu), s.link.headroom, s.link.output, pc, h)
	// UDPSize: miekg reads into a buffer of this size; the default (512)
	// would cut queries with EDNS0 options.
	s.dnsTCP = newDNSTCPListener(ln, dnsTCPPerClient, dnsTCPTotal)
	s.servers = []*mdns.Server{
		{PacketConn: pc, Handler: h, UDPSize: mdns.MaxMsgSize},
		{Listener: s.dnsTCP, Handler: h},
	}
	// Wait until both serve: Shutdown refuses a server that has not
	// started, and would leave it running.
	started := make(chan struct{}, len(s.servers))
	for _, srv := range s.servers {
		var once sync.Once
		signal := func() { once.Do(func() { started <- struct{}{} }) }
		srv.NotifyStartedFunc = signal
		s.serving.Go(func() {
			defer signal() // a server that failed to start must not hang New
			if err := srv.ActivateAndServe(); err != nil {
				s.log.Error("dns server stopped", "network", s.name, "err", err)
			}
		})
	}
	for range s.servers {
		<-started
	}
	return nil
}

// Deliver implements router.Local: it injects one IPv4 packet a container
// sent to the node. It is a no-op after Close.
func (s *Stack) Deliver(pkt []byte) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return
	}
	if s.dnsUDP != nil && s.dnsUDP.deliver(pkt) {
		return
	}
	s.link.deliver(pkt)
}

// Stats returns the stack's counters.
func (s *Stack) Stats() Stats {
	st := s.stack.Stats()
	out := Stats{
		Delivered:      st.IP.PacketsReceived.Value(),
		Sent:           s.link.outPackets.Load(),
		SendDropped:    s.link.outDropped.Load(),
		MalformedRcvd:  st.IP.MalformedPacketsReceived.Value() + st.UDP.MalformedPacketsReceived.Value() + st.TCP.ChecksumErrors.Value(),
		TCPEstablished: st.TCP.CurrentEstablished.Value(),
		UDPQueueDrops:  st.UDP.ReceiveBufferErrors.Value(),
		Coalesced:      s.link.coalesced.Load(),
	}
	if d := s.dnsUDP; d != nil {
		q := d.queries.Load()
		out.Delivered += q
		out.DNSFastQueries = q
		out.Sent += d.answers.Load()
		out.UDPQueueDrops += d.drops.Load()
	}
	if l := s.dnsTCP; l != nil {
		out.DNSTCPRefused = l.refused.Load()
	}
	return out
}

// Close stops the DNS servers (waiting up to a few seconds for requests in
// flight), aborts every connection and stops gVisor's goroutines. It is
// idempotent.
func (s *Stack) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()

	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), shutdownWait)
	defer cancel()
	for _, srv := range s.servers {
		if err := srv.ShutdownContext(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			errs = append(errs, fmt.Errorf("stack %s: dns shutdown: %w", s.name, err))
		}
	}
	if s.dnsUDP != nil {
		// Like the servers' own: queries waiting for an upstream end
		// within the resolver's timeout.
		s.dnsUDP.wait()
	}
	// Egress first: it stops taking flows and closes the host sockets, so
	// that its proxy goroutines end when the endpoints are aborted below.
	s.egress.close()
	// Aborting the endpoints ends serve loops that did not start yet or
	// that Shutdown gave up on.
	s.stack.Close()
	s.serving.Wait()
	s.stack.Wait()
	return errors.Join(errs...)
}
