package router

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// PortConfig describes a port to AddPort.
type PortConfig struct {
	// Network is the PN's VNI, in the PN half of the VNI space (see
	// IsNetworkVNI). Ports with equal Network share a forwarding table;
	// ports of different networks never see each other.
	Network uint32
	// PN is the id of the port's private network, which must own the
	// table of Network (ErrVNIOwned otherwise).
	PN string
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
	if !IsNetworkVNI(c.Network) {
		return fmt.Errorf("network %d is not a private network's 24-bit VNI (1..%d)", c.Network, EgressVNIBit-1)
	}
	if c.PN == "" {
		return fmt.Errorf("no private network id")
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
// Memory: an idle port of a ReadWaiter holds no buffers (they come from a
// pool shared by the ports of one shape, see readBatch); a port that is
// not one holds a batch while it is blocked in Read: BatchSize × (Headroom
// + max(MTU, 1500)) bytes, about 196 KiB for batch 128 and MTU 1390. An
// OffloadPort reads into buffers of Headroom+MaxGSOPacket (a 64 KiB
// super-packet per read, offloadBatch reads per batch).
type Attached struct {
	r     *Router
	port  Port
	off   OffloadPort // port, if it moves super-packets; nil otherwise
	pool  *batchPool
	cfg   PortConfig
	addr  [4]byte
	mtu   int
	table *table // the port's network; set once by attach
	slot  int    // HostIndex of addr
	entry *entry // what attach stored in table.slots[slot]

	// Owned by the read goroutine.
	icmpLimit  tokenBucket
	icmpID     uint16
	localLimit tokenBucket // packets to the network's Local
	// fairResolver counts the batch's packets to the resolver, paid for
	// with resolverPace while the node is contended (fair.go).
	fairResolver int
	resolverPace pacer
	flows        map[flowKey]flowPin // dedicated egress: each flow's gateway; nil until the first
	flowSwept    int64               // when a full flows table was last swept (see pinFlow)
	// overlayTimer bounds waits for a free overlay buffer; overlayFull:
	// one ran out in this batch, so the rest of it drops at once.
	// overlayWake is the wait's signal; overlayNext and overlayClass link a
	// waiting port into the overlay queue's waiter list, under its mutex.
	overlayTimer *time.Timer
	overlayFull  bool
	overlayWake  chan struct{}
	overlayNext  *Attached
	overlayClass *overlayClass

	egress atomic.Pointer[egressRoute] // dedicated egress; nil: node egress

	ctr counters // see counters: written by the read goroutine only
	tx  struct {
		packets, bytes atomic.Uint64 // added by the senders' read goroutines
	}

	closing   atomic.Bool
	done      chan struct{} // closed when the read goroutine has returned
	readErr   error         // why the read loop ended; written before done is closed
	afterMu   sync.Mutex
	after     func() // see AfterDone
	ended     bool   // done is closed; a later AfterDone runs at once
	closeOnce sync.Once
	closeErr  error
}

// offloadBatch is how many reads of an OffloadPort make a batch. Each may
// be a 64 KiB super-packet, so a batch holds 1 MiB of buffers while it is
// in use; more would only delay the first write.
const offloadBatch = 16

func newAttached(r *Router, p Port, cfg PortConfig, batch int) *Attached {
	a := &Attached{
		r:            r,
		port:         p,
		cfg:          cfg,
		addr:         cfg.Addr.As4(),
		mtu:          cfg.MTU,
		icmpLimit:    newTokenBucket(icmpInterval, icmpBurst, r.now()),
		localLimit:   newTokenBucket(localInterval, localBurst, r.now()),
		resolverPace: newPacer(fairResolverRate, fairResolverBurst, r.now()),
		done:         make(chan struct{}),
	}
	segSize := Headroom + max(cfg.MTU, minBufferMTU)
	shape := batchShape{batch: batch, bufSize: segSize}
	if off, ok := p.(OffloadPort); ok {
		a.off = off
		shape = batchShape{batch: min(batch, offloadBatch), bufSize: Headroom + MaxGSOPacket, segSize: segSize}
	}
	a.pool = r.pools.of(shape)
	return a
}

// Config returns the port's configuration (with defaults filled in).
func (a *Attached) Config() PortConfig { return a.cfg }

// Done is closed when the port's read goroutine has ended: after Close, or
// when the port died of a Read error (see Err).
func (a *Attached) Done() <-chan struct{} { return a.done }

// AfterDone arranges for f to run once, after Done is closed: on the
// port's read goroutine as it ends, or on a new goroutine if it has ended
// already. It is there so that an owner who must react to a port's death
// need not park a goroutine on Done for every port: that goroutine's stack
// was the largest part of an idle port's memory. f must not block for long;
// a second call replaces an f that has not run yet.
func (a *Attached) AfterDone(f func()) {
	a.afterMu.Lock()
	if !a.ended {
		a.after = f
		a.afterMu.Unlock()
		return
	}
	a.afterMu.Unlock()
	go f()
}

// end closes done and runs what AfterDone registered.
func (a *Attached) end() {
	close(a.done)
	a.afterMu.Lock()
	a.ended = true
	f := a.after
	a.after = nil
	a.afterMu.Unlock()
	if f != nil {
		f()
	}
}

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

// Counters returns the port's counters in detail (see Counters).
func (a *Attached) Counters() Counters {
	var c batchCounters
	a.ctr.snapshot(&c)
	return c.counters(a.tx.packets.Load(), a.tx.bytes.Load())
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
	defer a.end()
	w, _ := a.port.(ReadWaiter)
	failures := 0
	for {
		var err error
		if w != nil {
			err = w.WaitRead()
		}
		if err == nil {
			start := a.r.now()
			b := a.pool.get()
			b.n, err = a.read(b)
			n, full := b.n, b.n >= len(b.bufs)
			if n > 0 {
				b.n = min(b.n, len(b.bufs))
				a.forward(b, a.r.now())
			}
			a.pool.put(b)
			if n > 0 {
				a.fairAfter(start, full)
			}
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

func (a *Attached) read(b *readBatch) (int, error) {
	if a.off != nil {
		return a.off.ReadGSO(b.bufs, b.sizes, Headroom)
	}
	return a.port.Read(b.bufs, b.sizes, Headroom)
}
