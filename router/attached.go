package router

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
)

// PortConfig describes a port to AddPort.
type PortConfig struct {
	// Network is the PN's VNI (24 bits). Ports with equal Network share a
	// forwarding table; ports of different networks never see each other.
	Network uint32
	// Addr is the container's address, a host address of NetworkPrefix.
	// Packets from the port must carry it as source.
	Addr netip.Addr
	// MTU is the port's MTU (0: DefaultMTU). Packets to this port that are
	// larger are dropped (too_big), with ICMP fragmentation-needed to the
	// sender if they have DF set.
	MTU  int
	Name string // for logs and errors
}

func (c *PortConfig) normalize() error {
	if c.Network > 1<<24-1 {
		return fmt.Errorf("network %d is not a 24-bit VNI", c.Network)
	}
	if !IsHost(c.Addr) {
		return fmt.Errorf("address %s is not a host address of %s", c.Addr, NetworkPrefix)
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.MTU < 68 || c.MTU > 65535 {
		return fmt.Errorf("MTU %d outside 68..65535", c.MTU)
	}
	return nil
}

// maxReadErrors is how many Reads in a row may fail before the port is
// considered dead. Per-packet errors (an oversize packet, a bad offload)
// are followed by a successful Read; a broken device fails every time.
const maxReadErrors = 16

// minBufferMTU sizes read buffers for at least an Ethernet-sized packet
// even on ports with a smaller MTU, so that a container that raised its
// interface MTU a little gets too_big/ICMP rather than truncated packets.
const minBufferMTU = 1500

// Attached is a port attached to a Router. Its methods are safe for
// concurrent use.
//
// Memory per port: BatchSize × (Headroom + max(MTU, 1500)) bytes of read
// buffers, plus min(BatchSize, 10) × (Headroom + 576) for ICMP errors, plus
// four slices of BatchSize pointers. For a vnet_hdr TUN (batch 128, MTU
// 1390) that is 128 × 1564 ≈ 196 KiB + 6 KiB + 8 KiB ≈ 210 KiB. wireguard-go's
// NativeTun splits GSO super-packets into MSS-sized segments across the
// buffers, so no buffer needs more than the MTU. (Write-side GRO coalesces
// into spare capacity of the first buffer of a flow; these buffers have
// none, so each packet is one write(2). Coalescing would need larger
// buffers: a trade of memory for throughput left to the bench work.)
type Attached struct {
	r     *Router
	port  Port
	cfg   PortConfig
	addr  [4]byte
	mtu   int
	table *table // the port's network; set once by attach
	slot  int    // HostIndex of addr
	entry *entry // what attach stored in table.slots[slot]

	// Owned by the read goroutine.
	bufs       [][]byte    // read buffers, each Headroom+bufMTU, capacity capped
	sizes      []int       // packet sizes of the last Read
	dests      []*Attached // destination of packet i in the current batch, nil if dropped
	out        [][]byte    // scratch: the packets of one destination
	icmpBufs   [][]byte    // preallocated ICMP error packets
	icmpOut    [][]byte    // ICMP errors of the current batch
	icmpLimit  tokenBucket
	icmpID     uint16
	localLimit tokenBucket         // packets to the network's Local
	flows      map[flowKey]flowPin // dedicated egress: each flow's gateway

	egress atomic.Pointer[egressRoute] // dedicated egress; nil: node egress

	ctr counters // see counters: written by the read goroutine only
	tx  struct {
		packets, bytes atomic.Uint64 // added by the senders' read goroutines
	}

	closing   atomic.Bool
	done      chan struct{} // closed when the read goroutine has returned
	readErr   error         // why the read loop ended; written before done is closed
	closeOnce sync.Once
	closeErr  error
}

func newAttached(r *Router, p Port, cfg PortConfig, batch int) *Attached {
	bufSize := Headroom + max(cfg.MTU, minBufferMTU)
	a := &Attached{
		r:          r,
		port:       p,
		cfg:        cfg,
		addr:       cfg.Addr.As4(),
		mtu:        cfg.MTU,
		bufs:       make([][]byte, batch),
		sizes:      make([]int, batch),
		dests:      make([]*Attached, batch),
		out:        make([][]byte, 0, batch),
		icmpLimit:  newTokenBucket(icmpInterval, icmpBurst, r.now()),
		localLimit: newTokenBucket(localInterval, localBurst, r.now()),
		flows:      make(map[flowKey]flowPin),
		done:       make(chan struct{}),
	}
	slab := make([]byte, batch*bufSize)
	for i := range a.bufs {
		// Cap each buffer so that a Port appending in place (GRO) cannot
		// run into the next packet.
		a.bufs[i] = slab[i*bufSize : (i+1)*bufSize : (i+1)*bufSize]
	}
	nICMP := min(batch, icmpBurst)
	icmpSize := Headroom + icmpMaxSize
	icmpSlab := make([]byte, nICMP*icmpSize)
	a.icmpBufs = make([][]byte, nICMP)
	for i := range a.icmpBufs {
		a.icmpBufs[i] = icmpSlab[i*icmpSize : (i+1)*icmpSize : (i+1)*icmpSize]
	}
	a.icmpOut = make([][]byte, 0, nICMP)
	return a
}

// Config returns the port's configuration (with defaults filled in).
func (a *Attached) Config() PortConfig { return a.cfg }

// Done is closed when the port's read goroutine has ended: after Close, or
// when the port died of a Read error (see Err).
func (a *Attached) Done() <-chan struct{} { return a.done }

// Err returns the Read error that killed the port, or nil while it runs or
// when it ended because of Close.
func (a *Attached) Err() error {
	select {
	case <-a.done:
		return a.readErr
	default:
		return nil
	}
}

// Stats returns the port's traffic counters.
func (a *Attached) Stats() PortStats {
	var c batchCounters
	a.ctr.snapshot(&c)
	return PortStats{
		RxPackets: c[ctrRxPackets],
		RxBytes:   c[ctrRxBytes],
		TxPackets: a.tx.packets.Load(),
		TxBytes:   a.tx.bytes.Load(),
		Drops:     c.drops(),
	}
}

// Close removes the port from its network's table, closes the Port and
// waits for the read goroutine. The address can be attached again as soon
// as Close returns. It is idempotent; later calls return the first result.
func (a *Attached) Close() error {
	a.closeOnce.Do(func() {
		a.closing.Store(true)
		a.r.unlink(a)
		if err := a.port.Close(); err != nil {
			a.closeErr = fmt.Errorf("close port %q: %w", a.cfg.Name, err)
		}
		<-a.done
		a.r.retire(a)
		a.r.log.Debug("port detached", "port", a.cfg.Name, "network", a.cfg.Network, "addr", a.cfg.Addr)
	})
	return a.closeErr
}

// readLoop is the port's read goroutine; see the package comment.
func (a *Attached) readLoop() {
	defer close(a.done)
	failures := 0
	for {
		n, err := a.port.Read(a.bufs, a.sizes, Headroom)
		if n > 0 {
			a.forward(min(n, len(a.bufs)), a.r.now())
		}
		if err == nil {
			failures = 0
			continue
		}
		if a.closing.Load() {
			return
		}
		a.ctr[ctrReadErrors].Add(1)
		failures++
		closed := errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed)
		if closed || failures >= maxReadErrors {
			a.readErr = fmt.Errorf("read port %q: %w", a.cfg.Name, err)
			a.r.log.Error("port dead: read loop stopped", "port", a.cfg.Name, "network", a.cfg.Network,
				"addr", a.cfg.Addr, "consecutive_errors", failures, "err", err)
			return
		}
		if failures == 1 && a.ctr[ctrReadErrors].Load() == 1 {
			a.r.log.Warn("port read failed; continuing", "port", a.cfg.Name, "err", err)
		}
	}
}
