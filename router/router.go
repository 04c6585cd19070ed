// Package router forwards IPv4 packets between the ports (containers) of
// one node, inside each private network (PN), and between nodes through a
// VXLAN overlay encrypted by an embedded wireguard-go device.
//
// # Packet pipeline (packet path 1 of DESIGN.md)
//
// Every attached port has exactly one read goroutine (Attached.readLoop),
// started by AddPort and stopped by Attached.Close. It loops:
//
//	ReadWaiter.WaitRead()                      idle: wait without buffers (if the Port can)
//	→ take a batch of buffers from the pool shared by ports of this shape
//	→ Port.Read(batch)                         up to BatchSize packets
//	  (OffloadPort.ReadGSO: TCP super-packets of up to 64 KiB, see OffloadPort;
//	  one for another OffloadPort of the node stays whole, any other is
//	  segmented here first: gso_whole, gso_split, gso_segments)
//	→ for each packet (forward, sequential, no allocation):
//	    parse IPv4 header         else drop malformed / not_ipv4
//	    src == port address       else drop spoofed_source
//	    dst == resolver           → the network's Local (DNS, packet path 3), at
//	                                 most 50k packets/s per port (stack_rate_limited);
//	                                 no Local: drop resolver
//	    dst broadcast/multicast   → drop broadcast
//	    dst outside 10.240.0.0/22 → the network's Local if it does egress (path 4),
//	                                 else drop outside_network
//	    table of the SENDER's PN  → no entry: drop unknown_destination,
//	                                 queue ICMP host unreachable for the sender
//	    size > destination MTU    → drop too_big, ICMP fragmentation needed if DF
//	                                 (for a remote entry: the overlay's inner MTU)
//	    remote entry (other node) → copy into an overlay buffer, encapsulate
//	                                 (VXLAN, VNI of the PN, outer dst = node),
//	                                 queue for wireguard-go in the network's
//	                                 sub-queue (fair per network); no buffer
//	                                 within the network's share: wait up to
//	                                 10 ms, then drop overlay_fair_share or
//	                                 overlay_queue_full
//	    else remember the destination of packet i
//	→ one Port.Write per destination port with all its packets of the batch
//	→ one Port.Write back to the sender with the batch's ICMP errors
//	→ fold the batch's counters into the port's counters (atomics, per batch)
//	→ return the batch to the pool
//	→ a full batch while a port of another network forwards: pause for as
//	  long as the batch took (fair_pauses, fair.go)
//	  and, over 5000 packets/s to the resolver, until they are paid for
//	  (fair_resolver_pauses)
//
// # Overlay (packet path 2)
//
// EnableOverlay creates the Overlay, a tun.Device for wireguard-go.
// Outbound frames wait in its bounded queue (see above and overlayqueue.go)
// until wireguard-go's TUN reader takes them with Overlay.Read, one frame of
// each network in turn; Read keeps at most 256 frames inside wireguard-go,
// unsent, so that its FIFOs never hold a flood (overlay_inflight.go). Inbound, wireguard-go's per-peer
// receivers call Overlay.Write concurrently: decode VXLAN (else
// vxlan_malformed), table of the VNI (else unknown_vni), inner source must
// be a remote entry of the sending node (else forged_source), inner
// destination a local port (else unknown_destination), then one Port.Write
// per destination, in place in wireguard-go's buffer. Write finds tables
// through Router.vnis, a copy-on-write map republished under Router.state.
// Inbound drops send no ICMP error back across the overlay. Outbound
// packets are copied once (into the overlay buffer) because the queue
// outlives the port's batch; wireguard-go then copies them into its own
// buffers in Read. A TCP super-packet of an OffloadPort for a remote
// container is segmented straight into overlay buffers (Overlay.sendGSO),
// so its bytes too are copied once before Read.
//
// Packets to local ports are forwarded in place: the buffers the source
// read into are the buffers handed to the destination's Write, so nothing
// is copied in userspace. The router never changes a forwarded packet (no TTL decrement:
// a PN is one L2-like segment) and never fragments.
//
// # Ownership and locking
//
//   - A port's read goroutine owns the batch it took (buffers and scratch
//     slices) until it gives it back, its ICMP
//     rate limiter and the batch counters; nothing else touches them.
//   - Port.Write of one destination is called concurrently by the read
//     goroutines of every port sending to it; the Port contract allows that.
//     A Write must not block for long: it stalls the sending port.
//   - Remote entries (SetRemote, RemoveRemote) are stored like local ones,
//     under Router.state; a table lives while it holds a port or a remote.
//   - Forwarding tables are arrays of atomic pointers. The packet path only
//     loads them. Router.state (a mutex) serialises everything else: adding
//     and removing ports, the networks map, the set of live ports and the
//     counters of closed ports. The packet path never takes it.
//   - A port's counters are written only by its own read goroutine, once per
//     batch, including its packets to remote entries; the overlay's inbound
//     counters are atomics added once per Write call. Router.Stats sums
//     them under Router.state. Tx counters of a
//     destination are atomics added by the senders.
//
// # Shutdown
//
// Attached.Close: mark closing → clear the table slot (the address is free
// again) → Port.Close (unblocks Read) → wait for the read goroutine → move
// the counters into the router's totals. Senders that still hold the old
// entry see the closing mark and count unknown_destination, or at worst get
// a Write error (write_error). Router.Close refuses new ports and closes
// every attached one, then closes the overlay device.
//
// A Read error on a port that is not being closed is counted (read_errors)
// and logged once. Read errors are usually about one packet (wireguard-go's
// vnet_hdr TUN reports an oversize or badly offloaded packet as an error and
// has consumed it), so the loop continues; after maxReadErrors consecutive
// failures, or at once when the error says the device is closed, the port
// is dead: its loop ends, Attached.Done is closed and Attached.Err reports
// why. A dead port stays in the table until its owner calls Close.
package router

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMTU is the port MTU used when PortConfig.MTU is 0 and the daemon's
// default: a 1500-byte underlay minus VXLAN (50) and WireGuard (60)
// overhead, so a container's MTU does not change when a peer moves to
// another node.
const DefaultMTU = 1390

// Errors AddPort wraps, for callers that map them to user messages.
var (
	ErrAddrInUse = errors.New("address in use")
	ErrClosed    = errors.New("router closed")
)

// Config configures a Router.
type Config struct {
	Logger *slog.Logger // nil: discard
	// Resolver is the containers' DNS address and the source of the ICMP
	// errors the router sends. Zero: DefaultResolver. It must be an IPv4
	// address outside NetworkPrefix.
	Resolver netip.Addr
}

// Router forwards packets between attached ports. Create it with New.
type Router struct {
	log      *slog.Logger
	resolver [4]byte
	epoch    time.Time // origin of the monotonic nanoseconds of rate limiters

	// vnis is a read-only copy of state.networks for the overlay's receive
	// path, republished under state whenever a table is created or dropped.
	vnis    atomic.Pointer[map[uint32]*table]
	overlay atomic.Pointer[Overlay]   // set once by EnableOverlay
	flows   atomic.Pointer[FlowTable] // nil unless flow logs are on (EnableFlows)
	local   localCounters             // what Locals sent back (WriteLocal)
	// returns is a read-only copy of state.returns for the overlay's
	// receive path (see SetEgressReturn).
	returns atomic.Pointer[map[uint32]*egressReturn]
	// vniRefused counts entries, ports and Locals refused because their
	// network does not own the VNI's table (ErrVNIOwned).
	vniRefused atomic.Uint64
	probe      probeState // overlay probes (probe.go)
	pools      pools      // read batches, by shape (batch.go)
	fair       fairShare  // ports' pauses under contention (fair.go)
	// localGSOFree holds WriteLocalGSO's scratches (local_gso.go).
	localGSOFree chan *localGSOScratch
	// quietUntil is the router-clock time before which an unknown
	// destination is dropped without an ICMP error (HoldUnreachable).
	quietUntil atomic.Int64

	state struct {
		sync.Mutex
		closed   bool
		networks map[uint32]*table
		ports    map[*Attached]struct{}
		returns  map[uint32]*egressReturn // by egress VNI
		retired  batchCounters            // counters of ports already closed
		// retiredByVNI keeps the counters of closed ports per network, so
		// that a network's counters never go back; one entry per VNI ever
		// used on this node.
		retiredByVNI map[uint32]*Counters
	}
}

// New returns a router with no ports. It panics if cfg.Resolver is not an
// IPv4 address outside NetworkPrefix, which is a programming error.
func New(cfg Config) *Router {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	res := cfg.Resolver
	if !res.IsValid() {
		res = DefaultResolver
	}
	if !res.Is4() || NetworkPrefix.Contains(res) {
		panic(fmt.Sprintf("router: resolver %s must be an IPv4 address outside %s", res, NetworkPrefix))
	}
	r := &Router{log: log, resolver: res.As4(), epoch: time.Now(),
		localGSOFree: make(chan *localGSOScratch, localGSOScratches)}
	r.state.networks = make(map[uint32]*table)
	r.state.ports = make(map[*Attached]struct{})
	r.state.returns = make(map[uint32]*egressReturn)
	r.state.retiredByVNI = make(map[uint32]*Counters)
	r.publishNetworks()
	r.publishReturns()
	return r
}

// now is the router's monotonic clock in nanoseconds; it does not allocate.
func (r *Router) now() int64 { return int64(time.Since(r.epoch)) }

// HoldUnreachable makes the router drop packets for destinations it does
// not know, for the next d, without telling their senders (no ICMP host
// unreachable; the drop is still counted as unknown_destination). A
// worker that took over running containers restores their ports one by
// one and learns the other nodes' containers from gossip only after it
// has joined: an ICMP error in that window makes a container's connect
// fail at once ("No route to host"), where a silent drop only delays it
// until TCP sends its SYN again.
func (r *Router) HoldUnreachable(d time.Duration) {
	r.quietUntil.Store(r.now() + int64(d))
}

// AddPort registers p in the forwarding table of network cfg.Network and
// starts its read goroutine. The router owns p from now on: Attached.Close
// (or Router.Close) closes it. On error p is left untouched and open.
func (r *Router) AddPort(p Port, cfg PortConfig) (*Attached, error) {
	a, err := r.attach(p, cfg)
	if err != nil {
		return nil, err
	}
	go a.readLoop()
	return a, nil
}

// attach validates cfg and publishes the port in its table without
// starting the read goroutine (tests drive forward directly).
func (r *Router) attach(p Port, cfg PortConfig) (*Attached, error) {
	if err := cfg.normalize(); err != nil {
		return nil, fmt.Errorf("attach port %q: %w", cfg.Name, err)
	}
	if p == nil {
		return nil, fmt.Errorf("attach port %q: nil Port", cfg.Name)
	}
	batch := p.BatchSize()
	if batch < 1 {
		return nil, fmt.Errorf("attach port %q: batch size %d, want at least 1", cfg.Name, batch)
	}
	idx, _ := HostIndex(cfg.Addr)
	a := newAttached(r, p, cfg, batch)

	r.state.Lock()
	defer r.state.Unlock()
	if r.state.closed {
		return nil, fmt.Errorf("attach port %q: %w", cfg.Name, ErrClosed)
	}
	t, err := r.ownedTableLocked(cfg.Network, cfg.PN)
	if err != nil {
		return nil, fmt.Errorf("attach port %q: %w", cfg.Name, err)
	}
	if t.lookup(idx) != nil {
		// A local port or a remote entry (a container of another node).
		r.dropIfEmptyLocked(t)
		return nil, fmt.Errorf("attach port %q: %s in network %d: %w", cfg.Name, cfg.Addr, cfg.Network, ErrAddrInUse)
	}
	a.table = t
	a.slot = idx
	a.entry = &entry{kind: entryLocal, port: a}
	t.slots[idx].Store(a.entry)
	t.ports++
	r.state.ports[a] = struct{}{}
	r.log.Debug("port attached", "port", cfg.Name, "pn", cfg.PN, "network", cfg.Network, "addr", cfg.Addr, "mtu", cfg.MTU, "batch", batch)
	return a, nil
}

// unlink removes a from its table so that no new packet is sent to it.
func (r *Router) unlink(a *Attached) {
	r.state.Lock()
	defer r.state.Unlock()
	a.table.slots[a.slot].CompareAndSwap(a.entry, nil)
	a.table.ports--
	r.dropIfEmptyLocked(a.table)
}

// dropIfEmptyLocked forgets t when no port and no remote entry is left.
// Callers hold r.state.
func (r *Router) dropIfEmptyLocked(t *table) {
	if t.empty() && r.state.networks[t.vni] == t {
		delete(r.state.networks, t.vni)
		r.publishNetworks()
	}
}

// publishNetworks republishes the VNI map the overlay reads without lock.
// Callers hold r.state (or own r exclusively, in New).
func (r *Router) publishNetworks() {
	m := make(map[uint32]*table, len(r.state.networks))
	for k, v := range r.state.networks {
		m[k] = v
	}
	r.vnis.Store(&m)
}

// tableOf returns the table of network vni for the packet path, or nil.
func (r *Router) tableOf(vni uint32) *table { return (*r.vnis.Load())[vni] }

// retire moves the counters of a port whose read goroutine has ended into
// the router's totals.
func (r *Router) retire(a *Attached) {
	var c batchCounters
	a.ctr.snapshot(&c)
	r.state.Lock()
	defer r.state.Unlock()
	for i, v := range c {
		r.state.retired[i] += v
	}
	delete(r.state.ports, a)
	// Senders may still add to tx after this (they looked the port up
	// before it was unlinked); those few packets are not counted here.
	pc := c.counters(a.tx.packets.Load(), a.tx.bytes.Load())
	n := r.state.retiredByVNI[a.cfg.Network]
	if n == nil {
		n = new(Counters)
		r.state.retiredByVNI[a.cfg.Network] = n
	}
	n.add(&pc)
}

// NetworkCounters returns, for every network (VNI) that ever had a port on
// this node, the sum of the counters of its ports, closed ones included,
// so that each value only grows.
func (r *Router) NetworkCounters() map[uint32]Counters {
	r.state.Lock()
	defer r.state.Unlock()
	out := make(map[uint32]Counters, len(r.state.retiredByVNI)+len(r.state.networks))
	for vni, c := range r.state.retiredByVNI {
		out[vni] = *c
	}
	for a := range r.state.ports {
		c := out[a.cfg.Network]
		pc := a.Counters()
		c.add(&pc)
		out[a.cfg.Network] = c
	}
	return out
}

// Stats returns the router's counters, including those of closed ports.
func (r *Router) Stats() Stats {
	r.state.Lock()
	sum := r.state.retired
	for a := range r.state.ports {
		a.ctr.snapshot(&sum)
	}
	if o := r.overlay.Load(); o != nil {
		o.ctr.snapshot(&sum)
	}
	ports, networks := len(r.state.ports), len(r.state.networks)
	r.state.Unlock()
	s := sum.toStats()
	s.Ports, s.Networks = ports, networks
	s.Counters["probes_sent"] = r.probe.sent.Load()
	s.Counters["probes_answered"] = r.probe.answered.Load()
	s.Counters["probe_replies"] = r.probe.replies.Load()
	s.Counters["from_stack"] = r.local.packets.Load()
	s.Counters["from_stack_bytes"] = r.local.bytes.Load()
	s.Counters["from_stack_dropped"] = r.local.dropped.Load()
	s.Counters["vni_owner_refused"] = r.vniRefused.Load()
	return s
}

// Close closes every attached port and refuses new ones. It waits for all
// read goroutines. Later calls return nil.
func (r *Router) Close() error {
	r.state.Lock()
	if r.state.closed {
		r.state.Unlock()
		return nil
	}
	r.state.closed = true
	ports := make([]*Attached, 0, len(r.state.ports))
	for a := range r.state.ports {
		ports = append(ports, a)
	}
	r.state.Unlock()

	var errs []error
	for _, a := range ports {
		if err := a.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if o := r.overlay.Load(); o != nil {
		// Normally wireguard-go's device.Close closed it already; this ends
		// a Read of a device that was never handed to wireguard-go.
		if err := o.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
