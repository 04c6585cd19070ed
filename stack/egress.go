package stack

// Node egress (packet path 4 of DESIGN.md): the stack terminates the TCP
// and UDP flows and the pings that containers send to destinations outside
// their network and re-originates them from host sockets, so the outside
// sees the node's address (or Source).
//
// Packet flow:
//
//	Stack.Deliver → gVisor (promiscuous: any destination is accepted)
//	  TCP SYN  → tcpPacket (admission, on the injecting goroutine)
//	           → tcp.Forwarder → forwardTCP (gVisor starts one goroutine
//	             per admitted SYN): dial the host socket FIRST, then
//	             complete the handshake → tcpFlow.proxy, both ways, half-close
//	  UDP      → udpPacket (on the injecting goroutine): endpoint on the
//	             flow's 4-tuple → udpFlow goroutine: host socket, copies,
//	             idle timeout
//	  ICMP echo→ icmpPacket (on the injecting goroutine) → ping goroutine:
//	             unprivileged ping socket, reply built and written to the
//	             link with the container's ident and sequence
//
// Listening endpoints win over these handlers: the resolver's DNS sockets
// are found by gVisor's demultiplexer first, and everything else addressed
// to the stack's own address gets gVisor's usual answers (RST, port
// unreachable, echo reply).
//
// Goroutines and locking: every goroutine that runs egress code is counted
// in egress.wg from the moment it is decided (under egress.mu, on the
// injecting goroutine, which Stack.Close excludes with Stack.mu) until it
// returns; the proxy goroutines are children that their parent waits for.
// close marks the egress closed (no new flows), cancels dials and pings,
// aborts every flow (host sockets and gVisor endpoints) and wakes TCP
// handlers blocked in CreateEndpoint (see wakeHandshakes), then waits for
// egress.wg. So when close returns no egress goroutine is left and the
// lead's order in Stack.Close (egress.close, then stack.Close/Wait) holds.
//
// Flows are accounted per client address: the stack serves one network, so
// the address identifies the container.
//
// Loopback destinations (AllowLoopback) need the stack's IPv4 protocol built
// with ipv4.Options{AllowExternalLoopbackTraffic: true}: otherwise gVisor
// drops packets to 127/8 arriving on the link as martians before they reach
// these handlers (then even the default refusal is a silent drop, not a
// RST).

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/vrouter/vrouter/internal/ratelog"
	"github.com/vrouter/vrouter/router"
)

// Defaults of EgressConfig.
const (
	DefaultMaxPendingDials     = 1024
	DefaultMaxPendingPerClient = 64
	DefaultMaxFlowsPerClient   = 4096
	DefaultUDPIdleTimeout      = 2 * time.Minute
	DefaultDNSIdleTimeout      = 30 * time.Second // UDP flows to port 53
	DefaultDialTimeout         = 10 * time.Second
)

// Ping bounds: a ping socket and a goroutine per echo request in flight.
const (
	maxPingsPerClient = 16
	maxPingsTotal     = 256
)

// EgressConfig configures node egress (packet path 4).
type EgressConfig struct {
	// Source is the host address outbound sockets bind to; zero: the
	// kernel chooses (the node's own address). It must be an IPv4 address
	// of this host.
	Source netip.Addr
	// AllowLoopback permits loopback and link-local destinations (tests,
	// demos); by default they are refused.
	AllowLoopback bool
	// DenyAddrs are destinations always refused.
	DenyAddrs []netip.Addr
	// Deny is a list of refused destinations that may change while the
	// stack runs (the node's own addresses: the daemon follows them).
	Deny *DenyList
	// DenyPrefixes are destination networks always refused (the
	// operator's --egress-deny: metadata endpoints, the LAN).
	DenyPrefixes []netip.Prefix
	// LoopbackServicePorts are TCP and UDP ports of the daemon's own
	// services on loopback (profiler, metrics, gossip): refused on
	// loopback destinations even with AllowLoopback.
	LoopbackServicePorts []uint16
	// MaxPendingDials bounds the TCP dials in progress in the whole stack;
	// 0 means DefaultMaxPendingDials. SYNs beyond it are ignored (the
	// container retransmits).
	MaxPendingDials int
	// MaxPendingPerClient bounds the TCP dials in progress per container
	// address; 0 means DefaultMaxPendingPerClient. SYNs beyond it are
	// ignored.
	MaxPendingPerClient int
	// MaxFlowsPerClient bounds the established TCP connections plus UDP
	// flows per container address; 0 means DefaultMaxFlowsPerClient. A
	// SYN beyond it gets a RST, a datagram opening a new flow is dropped.
	MaxFlowsPerClient int
	// UDPIdleTimeout ends a UDP flow without traffic either way; 0 means
	// DefaultUDPIdleTimeout, DefaultDNSIdleTimeout for port 53.
	UDPIdleTimeout time.Duration
	// DialTimeout bounds a TCP dial and the wait for an echo reply; 0
	// means DefaultDialTimeout.
	DialTimeout time.Duration
	// Budget, shared by every stack of the node, bounds the host sockets
	// and flow buffer memory of all of them together; nil: no node-wide
	// bound (tests).
	Budget *Budget
	// Network names the stack's network in Budget (its fair share).
	Network string
	// Logger; nil means the stack's logger.
	Logger *slog.Logger
}

// EgressStats are egress counters. Active figures are current values, the
// others count since the stack started.
type EgressStats struct {
	TCPDials    uint64 // outbound TCP dials started
	TCPRefused  uint64 // dials refused by the destination: the container got a RST
	TCPFailed   uint64 // dials that timed out or failed otherwise
	TCPActive   uint64 // TCP connections being proxied now
	UDPFlows    uint64 // UDP flows opened
	UDPActive   uint64 // UDP flows open now
	PingsSent   uint64 // echo requests sent from a ping socket
	PingReplies uint64 // echo replies handed back to containers
	PingErrors  uint64 // echo requests not sent: no ping socket (see ping_group_range) or a send error
	Denied      uint64 // packets to refused destinations (private-network range, loopback, link-local, DenyAddrs, multicast…)
	Limited     uint64 // SYNs, new UDP flows and pings refused by a limit of the stack or of the node's Budget
}

// EgressStats returns the egress counters; zero without egress.
func (s *Stack) EgressStats() EgressStats {
	e := s.egress
	if e == nil {
		return EgressStats{}
	}
	return EgressStats{
		TCPDials:    e.stats.tcpDials.Load(),
		TCPRefused:  e.stats.tcpRefused.Load(),
		TCPFailed:   e.stats.tcpFailed.Load(),
		TCPActive:   e.stats.tcpActive.Load(),
		UDPFlows:    e.stats.udpFlows.Load(),
		UDPActive:   e.stats.udpActive.Load(),
		PingsSent:   e.stats.pingsSent.Load(),
		PingReplies: e.stats.pingReplies.Load(),
		PingErrors:  e.stats.pingErrors.Load(),
		Denied:      e.stats.denied.Load(),
		Limited:     e.stats.limited.Load(),
	}
}

type egressCounters struct {
	tcpDials, tcpRefused, tcpFailed, tcpActive atomic.Uint64
	udpFlows, udpActive                        atomic.Uint64
	pingsSent, pingReplies, pingErrors         atomic.Uint64
	denied, limited                            atomic.Uint64
}

// egress is the state of a stack's node egress; s.egress, nil without it.
type egress struct {
	s    *Stack
	cfg  EgressConfig // defaults filled in
	log  *slog.Logger
	self tcpip.Address // the stack's own address: never forwarded
	deny map[netip.Addr]struct{}

	// Test hooks, set before any packet arrives. dial opens a host socket
	// ("tcp4" or "udp4") to dst; listenPing opens an unprivileged ping
	// socket.
	dial       func(ctx context.Context, network string, dst netip.AddrPort) (net.Conn, error)
	listenPing func() (net.PacketConn, error)

	tcpFwd *tcp.Forwarder

	// ctx is cancelled by close: it aborts dials and ping waits.
	ctx    context.Context
	cancel context.CancelFunc
	// wg counts every goroutine running egress code (see the file comment).
	wg sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	clients map[netip.Addr]*clientUse
	// syns holds the admitted TCP SYNs from admission until their handler
	// completed the forwarder request: it deduplicates retransmitted SYNs
	// and keeps the sequence number an ICMP error must quote.
	syns         map[stack.TransportEndpointID]uint32
	pendingTotal int
	pings        int // echo requests in flight
	// flows are the open TCP connections, UDP flows and ping sockets;
	// close aborts them.
	flows map[flow]struct{}
	// handshakes are the waiter queues of TCP handlers blocked in
	// CreateEndpoint (see wakeHandshakes).
	handshakes map[*waiter.Queue]struct{}

	// refusals limits the ICMP errors answering refused datagrams and
	// pings: a flood must not become a flood of answers.
	refusals   *rate.Limiter
	rlog       *ratelog.Logger // refusals a container can trigger at will
	pingWarned atomic.Bool
	stats      egressCounters
}

// clientUse is what one container address holds.
type clientUse struct {
	pending int // TCP dials in progress
	flows   int // established TCP connections and UDP flows
	pings   int // echo requests in flight
}

// flow is something close must abort: it closes the host socket and the
// gVisor endpoint, which ends the flow's goroutines.
type flow interface{ abort() }

func (s *Stack) enableEgress(cfg EgressConfig) error {
	if cfg.MaxPendingDials < 0 || cfg.MaxPendingPerClient < 0 || cfg.MaxFlowsPerClient < 0 || cfg.UDPIdleTimeout < 0 || cfg.DialTimeout < 0 {
		return fmt.Errorf("negative limit or timeout in %+v", cfg)
	}
	if cfg.MaxPendingDials == 0 {
		cfg.MaxPendingDials = DefaultMaxPendingDials
	}
	if cfg.MaxPendingPerClient == 0 {
		cfg.MaxPendingPerClient = DefaultMaxPendingPerClient
	}
	if cfg.MaxFlowsPerClient == 0 {
		cfg.MaxFlowsPerClient = DefaultMaxFlowsPerClient
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = s.log
	}
	if cfg.Source.IsValid() {
		cfg.Source = cfg.Source.Unmap()
		if !cfg.Source.Is4() {
			return fmt.Errorf("source %v is not IPv4", cfg.Source)
		}
		// Fail now rather than on every flow: an address that is not the
		// host's cannot be bound.
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: cfg.Source.AsSlice()})
		if err != nil {
			return fmt.Errorf("source %v is not usable: %w", cfg.Source, err)
		}
		pc.Close()
	}
	prefixes := make([]netip.Prefix, 0, len(cfg.DenyPrefixes))
	for _, p := range cfg.DenyPrefixes {
		if !p.IsValid() || !p.Addr().Unmap().Is4() {
			return fmt.Errorf("deny prefix %v is not IPv4", p)
		}
		prefixes = append(prefixes, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).Masked())
	}
	cfg.DenyPrefixes = prefixes
	deny := make(map[netip.Addr]struct{}, len(cfg.DenyAddrs))
	for _, a := range cfg.DenyAddrs {
		deny[a.Unmap()] = struct{}{}
	}

	ctx, cancel := context.WithCancel(context.Background())
	e := &egress{
		s:          s,
		cfg:        cfg,
		log:        cfg.Logger,
		deny:       deny,
		ctx:        ctx,
		cancel:     cancel,
		clients:    make(map[netip.Addr]*clientUse),
		syns:       make(map[stack.TransportEndpointID]uint32),
		flows:      make(map[flow]struct{}),
		handshakes: make(map[*waiter.Queue]struct{}),
		refusals:   rate.NewLimiter(refusalICMPRate, refusalICMPBurst),
		rlog:       ratelog.New(cfg.Logger, 0),
	}
	e.dial = e.hostDial
	e.listenPing = e.hostListenPing
	addr, terr := s.stack.GetMainNICAddress(nicID, ipv4.ProtocolNumber)
	if terr != nil {
		cancel()
		return fmt.Errorf("own address: %v", terr)
	}
	e.self = addr.Address
	if err := tuneTCP(s.stack); err != nil {
		cancel()
		return err
	}
	// Promiscuous: accept packets for any destination. Spoofing: answer
	// from that destination (without it the forwarder's CreateEndpoint
	// fails with "network is unreachable").
	if terr := s.stack.SetPromiscuousMode(nicID, true); terr != nil {
		cancel()
		return fmt.Errorf("promiscuous mode: %v", terr)
	}
	if terr := s.stack.SetSpoofing(nicID, true); terr != nil {
		cancel()
		return fmt.Errorf("spoofing: %v", terr)
	}
	// The forwarder's own in-flight bound equals ours: admission
	// (tcpPacket) never lets more through, so the forwarder never drops
	// an admitted SYN behind our back.
	e.tcpFwd = tcp.NewForwarder(s.stack, tcpForwarderRcvWnd, cfg.MaxPendingDials, e.forwardTCP)
	s.egress = e
	s.stack.SetTransportProtocolHandler(tcp.ProtocolNumber, e.tcpPacket)
	s.stack.SetTransportProtocolHandler(udp.ProtocolNumber, e.udpPacket)
	s.stack.SetTransportProtocolHandler(icmp.ProtocolNumber4, e.icmpPacket)
	return nil
}

// close stops egress: no new flows, dials and pings cancelled, every flow
// aborted, and it waits for every egress goroutine. It runs after the
// stack refuses deliveries (Stack.Close sets closed under Stack.mu first)
// and before gVisor's endpoints are aborted. It is safe on a nil egress.
func (e *egress) close() {
	if e == nil {
		return
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	flows := make([]flow, 0, len(e.flows))
	for f := range e.flows {
		flows = append(flows, f)
	}
	e.mu.Unlock()

	e.cancel()
	for _, f := range flows {
		f.abort()
	}
	done := make(chan struct{})
	go func() {
		e.wg.Wait()
		close(done)
	}()
	// A handler can enter CreateEndpoint between the wake-up and its
	// registering with the waiter queue, which would lose the wake-up:
	// repeat it until every handler is gone.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		e.wakeHandshakes()
		select {
		case <-done:
			return
		case <-tick.C:
		}
	}
}

// wakeHandshakes makes TCP handlers blocked in CreateEndpoint return.
// CreateEndpoint waits for the handshake by listening for WritableEvents on
// the waiter queue the handler passed; once Deliver is refused the
// container's final ACK can never arrive, so without this the handler
// would wait for the SYN-ACK retries to run out (tens of seconds). A
// notification makes CreateEndpoint look at the endpoint: not connected, so
// it closes it and fails.
func (e *egress) wakeHandshakes() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for wq := range e.handshakes {
		wq.Notify(waiter.WritableEvents)
	}
}

// allowed reports whether dst may be reached from the host. Refused always:
// this-network (0/8, which Linux treats as the local host), multicast and
// limited broadcast, DenyAddrs and Deny; by default also loopback and
// link-local.
func (e *egress) allowed(dst netip.Addr) bool {
	if !allowedDst(dst, e.cfg.AllowLoopback, e.deny) || e.cfg.Deny.Has(dst) {
		return false
	}
	for _, p := range e.cfg.DenyPrefixes {
		if p.Contains(dst) {
			return false
		}
	}
	return true
}

// allowedPort reports whether a flow to dst:port may leave: allowed, and
// not one of the daemon's own services on loopback.
func (e *egress) allowedPort(dst netip.Addr, port uint16) bool {
	if !e.allowed(dst) {
		return false
	}
	if dst.IsLoopback() {
		for _, p := range e.cfg.LoopbackServicePorts {
			if p == port {
				return false
			}
		}
	}
	return true
}

func allowedDst(dst netip.Addr, allowLoopback bool, deny map[netip.Addr]struct{}) bool {
	dst = dst.Unmap()
	if !dst.Is4() {
		return false
	}
	b := dst.As4()
	switch {
	case b[0] == 0, dst.IsMulticast(), b == [4]byte{255, 255, 255, 255}:
		return false
	case router.NetworkPrefix.Contains(dst):
		// A container's peers are reached through the router's tables,
		// never through a netstack: a private-network address the router
		// handed over is not a container of the sender's network, and
		// dialing it from a host socket would complete the handshake
		// with whatever the host reaches there.
		return false
	case !allowLoopback && (dst.IsLoopback() || dst.IsLinkLocalUnicast()):
		return false
	}
	_, denied := deny[dst]
	return !denied
}

// client returns the accounting of addr, creating it. Callers hold e.mu.
func (e *egress) clientLocked(addr netip.Addr) *clientUse {
	c := e.clients[addr]
	if c == nil {
		c = &clientUse{}
		e.clients[addr] = c
	}
	return c
}

// forgetIdleLocked drops the accounting of a client that holds nothing, so
// the map does not grow with every address ever seen. Callers hold e.mu.
func (e *egress) forgetIdleLocked(addr netip.Addr, c *clientUse) {
	if c.pending == 0 && c.flows == 0 && c.pings == 0 {
		delete(e.clients, addr)
	}
}

// addFlow registers f for close; false if egress is closing (the caller
// aborts f).
func (e *egress) addFlow(f flow) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return false
	}
	e.flows[f] = struct{}{}
	return true
}

func (e *egress) removeFlow(f flow) {
	e.mu.Lock()
	delete(e.flows, f)
	e.mu.Unlock()
}

// releaseFlow gives back a client's flow slot and the budget it held
// (mem bytes and its host socket).
func (e *egress) releaseFlow(client netip.Addr, mem int64) {
	e.mu.Lock()
	if c := e.clients[client]; c != nil {
		c.flows--
		e.forgetIdleLocked(client, c)
	}
	e.mu.Unlock()
	e.releaseBudget(client, mem)
}

// Refusals of new flows by a limit are answered, at most this often, with
// an ICMP destination unreachable (administratively prohibited), so the
// container's socket fails at once instead of waiting.
const (
	refusalICMPRate  = 100 // per second, per stack
	refusalICMPBurst = 50
)

// acquireBudget takes a host socket and mem bytes of the node's budget for
// a new flow of client; "" or the reason it is refused.
func (e *egress) acquireBudget(client netip.Addr, mem int64) string {
	if e.cfg.Budget == nil {
		return ""
	}
	return e.cfg.Budget.acquire(e.cfg.Network, client, mem)
}

func (e *egress) releaseBudget(client netip.Addr, mem int64) {
	if e.cfg.Budget != nil {
		e.cfg.Budget.release(e.cfg.Network, client, mem)
	}
}

// logRefusal notes a flow the node's budget refused (rate-limited: a
// container can make them at will).
func (e *egress) logRefusal(proto, reason string, client, dst netip.Addr) {
	e.rlog.Warn(proto+"/"+reason, "egress: new flow refused by the node's budget",
		"proto", proto, "reason", reason, "network", e.cfg.Network, "client", client, "dst", dst)
}

// refuse answers a datagram or echo request client → dst refused by a
// limit with an ICMP "communication administratively prohibited" (Linux
// reports it to the socket as EHOSTUNREACH), rate-limited.
func (e *egress) refuse(client, dst netip.Addr, proto uint8, l4 [8]byte) {
	if e.refusals.Allow() {
		e.sendUnreachable(netipAddr(e.self), header.ICMPv4AdminProhibited, client, dst, proto, l4)
	}
}

// hostDial opens a host socket to dst from Source. ctx carries DialTimeout
// and is cancelled by close.
func (e *egress) hostDial(ctx context.Context, network string, dst netip.AddrPort) (net.Conn, error) {
	var d net.Dialer
	if network == "tcp4" {
		// DialTCP takes the addresses as they are: DialContext would
		// format dst, parse it back and walk the resolver's address list
		// for every connection a container opens.
		var laddr netip.AddrPort
		if e.cfg.Source.IsValid() {
			laddr = netip.AddrPortFrom(e.cfg.Source, 0)
		}
		c, err := d.DialTCP(ctx, network, laddr, dst)
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return c, nil
	}
	if e.cfg.Source.IsValid() && network == "udp4" {
		d.LocalAddr = &net.UDPAddr{IP: e.cfg.Source.AsSlice()}
	}
	return d.DialContext(ctx, network, dst.String())
}

func netipAddr(a tcpip.Address) netip.Addr {
	if a.Len() != 4 {
		return netip.Addr{}
	}
	return netip.AddrFrom4(a.As4())
}
