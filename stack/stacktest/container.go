// Package stacktest gives tests "containers" that need no root: each
// Container is one gVisor netstack with a single IPv4 address whose link is
// exposed as a router.Port, so real TCP, UDP and ping run between containers
// through the real router (or through any code that moves packets between
// Ports).
//
// Packet paths:
//
//	stack sends  → link.WritePackets → outbound queue → Port.Read  (→ router)
//	router sends → Port.Write → copy → link.InjectInbound → stack
//
// The outbound queue holds Config.QueueLen packets (default 1024). Like a
// NIC's transmit ring it drops when full instead of blocking the stack:
// blocking would stall gVisor's TCP processors (and Close) whenever nobody
// reads the Port, e.g. before it is attached. TCP recovers from the drops;
// 1024 covers a full default TCP window (1 MiB / 1390 bytes ≈ 750 packets),
// so drops only happen when the reader stalls.
//
// Goroutines: a Container starts none of its own; gVisor's stack starts its
// TCP processors, and Close stops them (stack.Close, then stack.Wait). Ping
// owns one reader goroutine for its duration.
package stacktest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/vrouter/vrouter/router"
)

const (
	// DefaultBatchSize is the Port's BatchSize when Config leaves it 0.
	DefaultBatchSize = 32
	// DefaultQueueLen is the outbound queue length when Config leaves it 0.
	DefaultQueueLen = 1024
	// PrefixLen is the length of the on-link prefix every private network
	// uses (10.240.0.0/22).
	PrefixLen = 22

	nicID tcpip.NICID = 1
)

// Config describes one container.
type Config struct {
	// Addr is the container's only address (IPv4, required). It is
	// configured as Addr/22 with a default route through the link.
	Addr netip.Addr
	// MTU of the link; 0 means router.DefaultMTU.
	MTU int
	// BatchSize reported by the Port and the most packets one Port.Read
	// returns; 0 means DefaultBatchSize.
	BatchSize int
	// QueueLen is the outbound queue length; 0 means DefaultQueueLen.
	QueueLen int
}

// Container is one gVisor netstack with one address and one link.
type Container struct {
	addr      netip.Addr
	mtu       int
	batchSize int
	stack     *stack.Stack
	link      *link
	pings     pingWatch

	// ctx is cancelled by Close; it ends blocked Port.Reads.
	ctx    context.Context
	cancel context.CancelFunc

	// mu guards closed. Port.Write holds it shared while injecting so that
	// Close never tears the stack down under an injection in progress.
	mu     sync.RWMutex
	closed bool
}

// New builds a container. Nothing runs until packets are written to its
// Port or one of its sockets is used; Close releases everything.
func New(cfg Config) (*Container, error) {
	if !cfg.Addr.Is4() {
		return nil, fmt.Errorf("stacktest: address %v is not IPv4", cfg.Addr)
	}
	if cfg.MTU == 0 {
		cfg.MTU = router.DefaultMTU
	}
	if cfg.MTU < header.IPv4MinimumMTU || cfg.MTU > 65535 {
		return nil, fmt.Errorf("stacktest: MTU %d out of range [%d, 65535]", cfg.MTU, header.IPv4MinimumMTU)
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.BatchSize < 0 {
		return nil, fmt.Errorf("stacktest: negative batch size %d", cfg.BatchSize)
	}
	if cfg.QueueLen == 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	if cfg.QueueLen < 0 {
		return nil, fmt.Errorf("stacktest: negative queue length %d", cfg.QueueLen)
	}

	// IPv4 only: the router forwards nothing else, and without ipv6 the
	// stack cannot answer or emit anything the router would count as
	// not_ipv4. No promiscuous mode and no spoofing: a container behaves
	// like a host that owns exactly one address.
	s := stack.New(stack.Options{
		// Replies from the loopback "internet" of egress tests come from
		// 127/8 addresses, which gVisor would drop as martians.
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocolWithOptions(ipv4.Options{AllowExternalLoopbackTraffic: true})},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	l := newLink(cfg.QueueLen, uint32(cfg.MTU))
	if err := setupNIC(s, l, cfg.Addr); err != nil {
		s.Destroy()
		return nil, fmt.Errorf("stacktest: container %v: %w", cfg.Addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Container{
		addr:      cfg.Addr,
		mtu:       cfg.MTU,
		batchSize: cfg.BatchSize,
		stack:     s,
		link:      l,
		ctx:       ctx,
		cancel:    cancel,
	}
	c.pings.init()
	return c, nil
}

func setupNIC(s *stack.Stack, l *link, addr netip.Addr) error {
	if err := s.CreateNICWithOptions(nicID, l, stack.NICOptions{Name: "vr0"}); err != nil {
		return fmt.Errorf("create NIC: %v", err)
	}
	pa := tcpip.ProtocolAddress{
		Protocol: ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{
			Address:   tcpip.AddrFrom4(addr.As4()),
			PrefixLen: PrefixLen,
		},
	}
	if err := s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
		return fmt.Errorf("add address %v/%d: %v", addr, PrefixLen, err)
	}
	// One default route, as `vrouter attach` sets up in a real netns: the
	// router, not the container, decides what is reachable.
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: nicID}})
	return nil
}

// Addr returns the container's address.
func (c *Container) Addr() netip.Addr { return c.addr }

// MTU returns the link MTU.
func (c *Container) MTU() int { return c.mtu }

// Port returns a new handle on the container's link for attaching to a
// router. Closing the handle does not close the container, so a container
// can be detached and attached again with a fresh handle. At most one handle
// should be open at a time: open handles share the outbound queue and would
// split the packets between them.
func (c *Container) Port() router.Port {
	ctx, cancel := context.WithCancel(c.ctx)
	return &port{c: c, ctx: ctx, cancel: cancel}
}

// TxDropped counts outbound packets lost before a Port reader got them:
// the queue was full (nobody read the Port fast enough) or a packet did not
// fit the reader's buffer.
func (c *Container) TxDropped() uint64 { return c.link.dropped.Load() }

// DstUnreachableReceived counts the ICMP destination unreachable messages
// the container's stack received (gVisor reports only some codes to a UDP
// socket, Linux reports them all).
func (c *Container) DstUnreachableReceived() uint64 {
	return c.stack.Stats().ICMP.V4.PacketsReceived.DstUnreachable.Value()
}

// Close aborts every socket of the container, stops the stack's goroutines
// and makes Port reads and writes fail with os.ErrClosed. It is idempotent.
func (c *Container) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()

	// Order: wake blocked Port.Reads, abort endpoints and stop protocol
	// goroutines (Close), then wait for them and remove the NIC, which
	// closes the link and releases queued packets (Wait).
	c.cancel()
	c.stack.Close()
	c.stack.Wait()
	return nil
}

// isClosed reports whether Close was called.
func (c *Container) isClosed() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.closed
}

// errClosed wraps os.ErrClosed with the container's identity.
func (c *Container) errClosed(op string) error {
	return fmt.Errorf("stacktest: %s on container %v: %w", op, c.addr, os.ErrClosed)
}

// ErrHostUnreachable is what dials and pings return (wrapped, test with
// errors.Is) when an ICMP destination host unreachable came back. It is the
// kernel's EHOSTUNREACH so that code written against real sockets matches it
// too.
var ErrHostUnreachable error = errHostUnreachable

// ErrNoBufferSpace is returned by SendRaw when the outbound queue is full.
var ErrNoBufferSpace = errors.New("stacktest: outbound queue full")
