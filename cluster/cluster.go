// Package cluster gives the daemon encrypted membership (hashicorp/memberlist
// with an AES-256-GCM keyring), gossiped node metadata and a replicated
// record store (see Store). It never touches packets.
//
// Goroutines: New starts memberlist (its listeners, probe, gossip and
// push-pull tickers) and one maintenance goroutine of ours (reaping dead
// nodes, store GC); Join runs memberlist's blocking Join on a goroutine so
// it can honour ctx. Close and Kill stop all of them, in that order:
// memberlist Leave (Close only), memberlist Shutdown, maintenance stop, wait.
//
// Locking: Cluster.mu guards the peer table, metadata and join state; Store
// has its own mutex. Order: memberlist's node lock (held while it calls the
// event delegate) → Cluster.mu → Store.mu → the broadcast queue's lock.
// Nothing holding Cluster.mu or Store.mu calls into memberlist, and the
// queue's NumNodes reads an atomic instead of memberlist, so the order has
// no cycle.
package cluster

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Join errors, for errors.Is.
var (
	// ErrKeyMismatch: the seed answered but we could not talk: it uses
	// another cluster key (or none).
	ErrKeyMismatch = errors.New("cluster key mismatch: the seed uses a different cluster key")
	// ErrNoSeed: no seed could be reached at all.
	ErrNoSeed = errors.New("no seed answered")
	// ErrNameInUse: a live node already uses our name.
	ErrNameInUse = errors.New("node name already in use")
	// ErrClosed: the Cluster was closed.
	ErrClosed = errors.New("cluster closed")
)

type nameInUseError struct {
	name string
	addr netip.AddrPort
}

func (e *nameInUseError) Error() string {
	return fmt.Sprintf("node name %q is already used by %s", e.name, e.addr)
}

func (e *nameInUseError) Is(target error) bool { return target == ErrNameInUse }

// Cluster is this node's membership in the cluster.
type Cluster struct {
	name      string
	log       *slog.Logger
	mc        *memberlist.Config
	ml        *memberlist.Memberlist
	store     *Store
	sign      *signer
	pins      *pins
	metas     *metaCache
	sock      *sockTransport // nil with another Network
	queue     *memberlist.TransmitLimitedQueue
	changes   chan struct{}
	local     netip.AddrPort
	started   time.Time
	reapAfter time.Duration
	numNodes  atomic.Int32 // self + peers alive or suspect: the queue's NumNodes
	mlLog     *logWriter   // memberlist's log, rate-limited and counted

	mu           sync.Mutex
	meta         NodeMeta
	metaBytes    []byte
	nodes        map[string]*nodeInfo // peers by name
	byes         map[string]uint64    // peers that announced a graceful leave → BootID
	joining      bool
	joinConflict error
	metaErrors   uint64
	metaRefused  uint64               // peers' metadata without a valid signature
	keyChanged   uint64               // peers' metadata signed by another key than the pinned one
	metaStale    uint64               // peers' genuine metadata of a life older than the one we trust
	warned       map[string]time.Time // rate limit of identity warnings, by node and reason
	closed       bool

	joinMu    sync.Mutex // serializes Join
	closeOnce sync.Once
	stop      chan struct{} // closed by Close/Kill: stops maintenance
	wg        sync.WaitGroup
}

// New starts memberlist listening. The node is a single-node cluster until
// Join. A zero cfg.Meta.BootID is replaced by a random one; a non-zero
// one with a non-zero cfg.Meta.Started resumes that life (a restarted
// worker of the same node, whose records peers keep), otherwise Started
// is now.
func New(cfg Config) (*Cluster, error) {
	mc, err := cfg.memberlistConfig()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	priv := cfg.SigningKey
	if priv == nil {
		if _, priv, err = ed25519.GenerateKey(nil); err != nil {
			return nil, fmt.Errorf("cluster config: generate signing key: %w", err)
		}
	}
	sign, err := newSigner(priv)
	if err != nil {
		return nil, fmt.Errorf("cluster config: %w", err)
	}
	pins, err := loadPins(cfg.PinFile)
	if err != nil {
		return nil, fmt.Errorf("cluster config: %w", err)
	}
	started := time.Now()
	meta := cfg.Meta
	if meta.BootID == 0 || meta.Started == 0 {
		meta.Started = started.UnixNano()
	}
	for meta.BootID == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		meta.BootID = binary.LittleEndian.Uint64(b[:])
	}
	mb, err := signMeta(cfg.Name, &meta, sign)
	if err != nil {
		return nil, fmt.Errorf("cluster config: %w", err)
	}
	c := &Cluster{
		name:      cfg.Name,
		log:       log.With("node", cfg.Name),
		mc:        mc,
		sign:      sign,
		pins:      pins,
		metas:     newMetaCache(),
		changes:   make(chan struct{}, 1),
		started:   started,
		warned:    make(map[string]time.Time),
		reapAfter: mc.GossipToTheDeadTime,
		meta:      meta,
		metaBytes: mb,
		nodes:     make(map[string]*nodeInfo),
		byes:      make(map[string]uint64),
		stop:      make(chan struct{}),
	}
	c.numNodes.Store(1)
	c.store = newStore(cfg.Name, meta.BootID, tombstoneTTL(mc))
	c.store.out = c.queueBroadcast
	c.store.changed = c.signal
	c.store.sign = sign
	c.store.keyOf = pins.key
	c.store.hlc = meta.Started
	c.queue = &memberlist.TransmitLimitedQueue{
		NumNodes:       func() int { return int(c.numNodes.Load()) },
		RetransmitMult: mc.RetransmitMult,
	}
	d := delegate{c}
	mc.Delegate, mc.Events, mc.Merge, mc.Conflict, mc.Ping = d, d, d, d, d
	c.mlLog = newLogWriter(c.log, c.markSuspect)
	mc.Logger = c.mlLog.logger()

	network := cfg.Network
	if network == nil {
		network = sockNetwork{}
	}
	// Last before Create: the transport holds its address until it is
	// shut down.
	bind := netip.MustParseAddr(mc.BindAddr) // checked by memberlistConfig
	tr, err := network.Listen(netip.AddrPortFrom(bind, uint16(mc.BindPort)))
	if err != nil {
		return nil, fmt.Errorf("start gossip transport on %s:%d: %w", mc.BindAddr, cfg.BindPort, err)
	}
	mc.Transport = tr
	c.sock, _ = tr.(*sockTransport)
	ml, err := memberlist.Create(mc)
	if err != nil {
		_ = tr.Shutdown()
		return nil, fmt.Errorf("start memberlist on %s:%d: %w", mc.BindAddr, cfg.BindPort, err)
	}
	c.ml = ml
	ln := ml.LocalNode()
	c.local = addrPortOf(ln.Addr, ln.Port)
	c.wg.Add(1)
	go c.maintain()
	c.log.Debug("cluster started", "addr", c.local, "timing", cfg.Timing, "boot", meta.BootID)
	return c, nil
}

// LocalAddr is the advertised gossip address (the bound port when BindPort
// was 0).
func (c *Cluster) LocalAddr() netip.AddrPort { return c.local }

// Store returns the replicated record store.
func (c *Cluster) Store() *Store { return c.store }

// Changes fires (capacity 1, never blocking gossip) when nodes or records
// changed: take a new snapshot.
func (c *Cluster) Changes() <-chan struct{} { return c.changes }

func (c *Cluster) signal() {
	select {
	case c.changes <- struct{}{}:
	default:
	}
}

// Join makes one attempt at every seed ("ip:port"). It succeeds if at least
// one seed accepted us. Errors wrap ErrKeyMismatch, ErrNoSeed or
// ErrNameInUse ("node name X is already used by ADDR"). ctx bounds the wait,
// not the attempt: memberlist's own Join is bounded by its TCP timeout per
// seed and may still complete after ctx ends.
func (c *Cluster) Join(ctx context.Context, seeds []string) error {
	if len(seeds) == 0 {
		return errors.New("join: no seeds")
	}
	c.joinMu.Lock()
	defer c.joinMu.Unlock()

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return fmt.Errorf("join: %w", ErrClosed)
	}
	c.joining, c.joinConflict = true, nil
	c.wg.Add(1)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.joining = false
		c.mu.Unlock()
	}()

	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer c.wg.Done()
		n, err := c.ml.Join(seeds)
		done <- result{n, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		return fmt.Errorf("join %s: %w", strings.Join(seeds, ","), ctx.Err())
	}

	c.mu.Lock()
	conflict := c.joinConflict
	c.mu.Unlock()
	switch {
	case conflict != nil:
		return fmt.Errorf("join %s: %w", strings.Join(seeds, ","), conflict)
	case r.n > 0:
		c.log.Debug("joined cluster", "seeds", seeds, "answered", r.n)
		return nil
	case r.err != nil && isKeyMismatch(r.err):
		return fmt.Errorf("join %s: %w (%s)", strings.Join(seeds, ","), ErrKeyMismatch, flatError(r.err))
	default:
		return fmt.Errorf("join %s: %w: %s", strings.Join(seeds, ","), ErrNoSeed, flatError(r.err))
	}
}

// flatError renders memberlist's multierror (one error per seed, as a
// bulleted multi-line text) on one line.
func flatError(err error) string {
	if err == nil {
		return "no error"
	}
	if m, ok := err.(interface{ WrappedErrors() []error }); ok {
		parts := make([]string, 0, len(m.WrappedErrors()))
		for _, e := range m.WrappedErrors() {
			parts = append(parts, e.Error())
		}
		return strings.Join(parts, "; ")
	}
	return err.Error()
}

// isKeyMismatch recognises memberlist's decryption failures, on our side or
// reported back by the seed.
func isKeyMismatch(err error) bool {
	s := err.Error()
	for _, m := range []string{
		"no installed keys could decrypt",
		"remote state is encrypted and encryption is not configured",
		"encryption is configured but remote state is not encrypted",
	} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

// Life is this node's BootID and start (unix nanos): what a worker taking
// over the node's ports passes to New to stay the same life for peers.
func (c *Cluster) Life() (boot uint64, started int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.meta.BootID, c.meta.Started
}

// SetMeta re-advertises our metadata. BootID 0 keeps the current one; it
// cannot change for the life of the Cluster (it names this life).
func (c *Cluster) SetMeta(m NodeMeta) error {
	c.mu.Lock()
	if m.BootID == 0 {
		m.BootID = c.meta.BootID
	}
	if m.BootID != c.meta.BootID {
		c.mu.Unlock()
		return fmt.Errorf("set meta: BootID cannot change (%d → %d)", c.meta.BootID, m.BootID)
	}
	m.Started = c.meta.Started
	b, err := signMeta(c.name, &m, c.sign)
	if err != nil {
		c.mu.Unlock()
		return fmt.Errorf("set meta: %w", err)
	}
	if c.closed {
		c.mu.Unlock()
		return fmt.Errorf("set meta: %w", ErrClosed)
	}
	c.meta = m
	c.meta.EgressIPs = append([]netip.Addr(nil), m.EgressIPs...)
	c.metaBytes = b
	c.mu.Unlock()
	// UpdateNode only waits for the broadcast to finish; the update is
	// queued either way, so a short wait and ignoring its timeout keep
	// SetMeta from blocking on gossip.
	_ = c.ml.UpdateNode(time.Millisecond)
	c.signal()
	return nil
}

// SettleTime is a Claim settle long enough for gossip to bring competing
// claims: the rounds memberlist retransmits a broadcast for the current
// cluster size, plus one. 0 when we are alone.
func (c *Cluster) SettleTime() time.Duration {
	n := int(c.numNodes.Load())
	if n <= 1 {
		return 0
	}
	rounds := c.mc.RetransmitMult*int(math.Ceil(math.Log10(float64(n+1)))) + 1
	return time.Duration(rounds) * c.mc.GossipInterval
}

// RepairInterval is how often each node runs a push-pull with a random
// peer at the current cluster size: the bound on how long a record the
// broadcasts missed stays missing.
func (c *Cluster) RepairInterval() time.Duration {
	return pushPullEvery(c.mc.PushPullInterval, int(c.numNodes.Load()))
}

// RepairIntervalAt is RepairInterval for a cluster of n nodes: what a
// caller waiting for the cluster to grow to n must allow, while this
// node's own count still lags behind.
func (c *Cluster) RepairIntervalAt(n int) time.Duration {
	return pushPullEvery(c.mc.PushPullInterval, n)
}

// pushPullEvery is memberlist's own stretch of PushPullInterval for n
// nodes (pushPullScale, unexported there): beyond 32 nodes each doubling
// of the cluster adds one interval, so a 100-node cluster repairs every
// three intervals, not every one.
func pushPullEvery(interval time.Duration, n int) time.Duration {
	const threshold = 32
	if n <= threshold {
		return interval
	}
	mult := math.Ceil(math.Log2(float64(n))-math.Log2(threshold)) + 1
	return time.Duration(mult) * interval
}

// Stats are the cluster's counters: the store's plus metadata decode errors.
type Stats struct {
	StoreStats
	MetaErrors      uint64 // peers' metadata that failed to decode
	MetaUnsigned    uint64 // peers' metadata refused: no valid signature, or a start in the future
	MetaKeyChanged  uint64 // peers' metadata refused: signed by another key than the one pinned for the name
	MetaStale       uint64 // peers' metadata ignored: genuine, but of a life older than the trusted one (a replay)
	QueuedBroadcast int    // store broadcasts waiting in the gossip queue
	// GossipWarnings counts memberlist's warnings and errors (logged at
	// most every few seconds per kind); GossipUndecryptable those about
	// a packet that failed to decrypt (no or another cluster key).
	GossipWarnings      uint64
	GossipUndecryptable uint64
	// GossipSocketErrors counts failed reads of the gossip UDP socket and
	// failed accepts on its TCP listener (the default Network only).
	GossipSocketErrors uint64
}

// Stats returns current counters.
func (c *Cluster) Stats() Stats {
	st := Stats{StoreStats: c.store.Stats(), QueuedBroadcast: c.queue.NumQueued(),
		GossipWarnings: c.mlLog.warnings.Load(), GossipUndecryptable: c.mlLog.undecryptable.Load()}
	if c.sock != nil {
		st.GossipSocketErrors = c.sock.readErrors.Load() + c.sock.acceptErrors.Load()
	}
	c.mu.Lock()
	st.MetaErrors = c.metaErrors
	st.MetaUnsigned = c.metaRefused
	st.MetaKeyChanged = c.keyChanged
	st.MetaStale = c.metaStale
	c.mu.Unlock()
	return st
}

// SigningKey is this node's public signing key, as pinned by its peers.
func (c *Cluster) SigningKey() [32]byte { return c.sign.pub }

// Pins lists the signing keys pinned to peer names, sorted by name.
func (c *Cluster) Pins() []Pin { return c.pins.list() }

// ErrNoPin: Unpin of a name that has no pin.
var ErrNoPin = errors.New("no signing key pinned for that name")

// Unpin removes the signing key pinned to name, so that the next key seen
// for it is trusted (as a new node would be): what an operator does after
// reinstalling a node, whose new state dir has a new key. A node currently
// refused for a changed key is re-checked at once.
func (c *Cluster) Unpin(name string) error {
	if err := checkName(name); err != nil {
		return fmt.Errorf("unpin: %w", err)
	}
	ok, err := c.pins.remove(name)
	if err != nil {
		return fmt.Errorf("unpin %s: %w", name, err)
	}
	if !ok {
		return fmt.Errorf("unpin %s: %w", name, ErrNoPin)
	}
	c.log.Info("removed signing key pin", "peer", name)
	c.mu.Lock()
	n := c.nodes[name]
	var raw []byte
	var addr netip.AddrPort
	if n != nil && n.state.up() && n.refused != nil {
		raw, addr = n.refused, n.addr
	}
	c.mu.Unlock()
	if raw != nil {
		c.peerUp(name, addr, raw)
	}
	return nil
}

// Close leaves gracefully (bounded wait for the leave to be gossiped), shuts
// memberlist down and stops our goroutines. It is idempotent.
func (c *Cluster) Close() error { return c.shutdown(true) }

// Kill shuts down without leaving, as a crash would: peers must detect the
// death. For tests.
func (c *Cluster) Kill() { _ = c.shutdown(false) }

func (c *Cluster) shutdown(graceful bool) error {
	var err error
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		boot := c.meta.BootID
		c.mu.Unlock()
		if graceful {
			// The bye rides in the same gossip packets as memberlist's
			// leave, so peers can show "left" rather than "dead".
			c.queue.QueueBroadcast(&broadcast{name: "\x00bye", msg: encodeBye(c.name, boot)})
			if lerr := c.ml.Leave(c.leaveTimeout()); lerr != nil {
				c.log.Debug("leave not confirmed", "err", lerr)
			}
		}
		if serr := c.ml.Shutdown(); serr != nil {
			err = fmt.Errorf("shutdown memberlist: %w", serr)
		}
		close(c.stop)
		c.wg.Wait()
		c.log.Debug("cluster closed", "graceful", graceful)
	})
	return err
}

// leaveTimeout bounds Close's wait for the leave broadcast, which normally
// finishes after memberlist's retransmit limit of gossip rounds.
func (c *Cluster) leaveTimeout() time.Duration {
	return max(time.Second, 4*time.Duration(c.mc.RetransmitMult)*c.mc.GossipInterval)
}

// maintain reaps long-dead peers, GCs the store and bounds the gossip
// queue. Owned by the Cluster; stopped by close(c.stop).
func (c *Cluster) maintain() {
	defer c.wg.Done()
	t := time.NewTicker(c.mc.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case now := <-t.C:
			c.reap(now)
			c.store.gc()
			c.pruneWarned(now)
			// Each (owner, key) has at most one queued broadcast, so only
			// a flood of distinct keys gets here; the oldest go first and
			// push-pull repairs them.
			// (Prune itself crashes on a queue that never held anything.)
			if c.queue.NumQueued() > maxQueuedBroadcasts {
				c.queue.Prune(maxQueuedBroadcasts)
			}
		}
	}
}

const maxQueuedBroadcasts = 4096

func (c *Cluster) queueBroadcast(name string, msg []byte) {
	c.queue.QueueBroadcast(&broadcast{name: name, msg: msg})
}

// peerUp handles memberlist's join and update events. Metadata that fails
// the identity checks changes nothing but the node's Identity: the last
// trusted metadata (if any) and the store's view of the owner stay.
func (c *Cluster) peerUp(name string, addr netip.AddrPort, rawMeta []byte) {
	meta, id := c.checkMeta(name, rawMeta)
	c.mu.Lock()
	n := c.nodes[name]
	if n == nil {
		n = &nodeInfo{}
	}
	wasUp := n.state.up() && !n.since.IsZero()
	if !wasUp {
		n.state, n.since = StateAlive, time.Now()
		delete(c.byes, name)
	}
	n.addr = addr
	switch {
	case id == IdentityOK && wasUp && n.staleLife(meta):
		// A replay of the node's earlier life (its signature holds):
		// taking it would hide the current life's entries everywhere
		// until the node refutes it.
		c.metaStale++
	case id == IdentityOK:
		n.meta, n.trusted, n.refused, n.identity = meta, true, nil, id
	default:
		n.refused, n.identity = append([]byte(nil), rawMeta...), id
	}
	c.setPeerLocked(name, n)
	trusted, m := n.trusted, n.meta
	c.mu.Unlock()
	if trusted {
		c.store.setOwnerLife(name, m.BootID, m.Started, true)
	}
	c.signal()
}

// peerDown handles memberlist's leave event: the node is dead or left.
func (c *Cluster) peerDown(name string, addr netip.AddrPort, rawMeta []byte) {
	meta, id := c.checkMeta(name, rawMeta)
	c.mu.Lock()
	n := c.nodes[name]
	if n == nil {
		n = &nodeInfo{}
	}
	n.addr = addr
	if id == IdentityOK && !(n.state.up() && n.staleLife(meta)) {
		n.meta, n.trusted, n.refused, n.identity = meta, true, nil, id
	}
	n.state, n.since = StateDead, time.Now()
	if boot, ok := c.byes[name]; ok && n.trusted && boot == n.meta.BootID {
		n.state = StateLeft
	}
	c.setPeerLocked(name, n)
	trusted, m := n.trusted, n.meta
	c.mu.Unlock()
	if trusted {
		c.store.setOwnerLife(name, m.BootID, m.Started, false)
	}
	c.signal()
}

// checkMeta decodes a peer's metadata and checks its identity: signed for
// name by the key it carries, that key pinned to name (pinning it if name
// is new), and a start time not in our future.
func (c *Cluster) checkMeta(name string, b []byte) (NodeMeta, IdentityState) {
	m, err := c.metas.verify(name, b)
	now := time.Now()
	switch {
	case err != nil && !errors.Is(err, errMetaUnsigned):
		c.mu.Lock()
		c.metaErrors++
		c.mu.Unlock()
		c.warnIdentity(name, "undecodable", "undecodable node metadata; node ignored", "err", err)
		return NodeMeta{}, IdentityUnsigned
	case err != nil:
		c.mu.Lock()
		c.metaRefused++
		c.mu.Unlock()
		c.warnIdentity(name, "unsigned", "node metadata without a valid signature; node ignored", "err", err)
		return NodeMeta{}, IdentityUnsigned
	case m.Started > now.Add(maxClockSkew).UnixNano():
		c.mu.Lock()
		c.metaRefused++
		c.mu.Unlock()
		c.warnIdentity(name, "future", "node metadata starts in the future; node ignored (clock skew?)",
			"started", time.Unix(0, m.Started).UTC())
		return NodeMeta{}, IdentityUnsigned
	}
	ok, err := c.pins.check(name, m.SigningKey, now)
	if errors.Is(err, errTooManyPins) {
		c.mu.Lock()
		c.metaRefused++
		c.mu.Unlock()
		c.warnIdentity(name, "pins-full", "pin table full; new node refused (unpin names of nodes gone for good)", "err", err)
		return NodeMeta{}, IdentityUnsigned
	}
	if err != nil {
		c.warnIdentity(name, "pin-save", "could not save signing key pin", "err", err)
	}
	if !ok {
		c.mu.Lock()
		c.keyChanged++
		c.mu.Unlock()
		pinned, _ := c.pins.key(name)
		c.warnIdentity(name, "key-changed", "node signing key differs from the pinned one; node refused until unpinned (vrouter peers unpin NAME)",
			"pinned", fmt.Sprintf("%x", pinned[:8]), "offered", fmt.Sprintf("%x", m.SigningKey[:8]))
		return NodeMeta{}, IdentityKeyChanged
	}
	return m, IdentityOK
}

// identityWarnEvery bounds the identity warnings per node and reason: a
// forger can resend its metadata as often as it likes.
const identityWarnEvery = time.Minute

func (c *Cluster) warnIdentity(name, reason, msg string, args ...any) {
	now := time.Now()
	k := name + "\x00" + reason
	c.mu.Lock()
	last, seen := c.warned[k]
	if seen && now.Sub(last) < identityWarnEvery {
		c.mu.Unlock()
		return
	}
	c.warned[k] = now
	c.mu.Unlock()
	c.log.Warn(msg, append([]any{"peer", name}, args...)...)
}

// handleBye records a peer's announced graceful leave. It may arrive before
// or after memberlist's leave event.
func (c *Cluster) handleBye(name string, boot uint64) {
	c.mu.Lock()
	n := c.nodes[name]
	changed := false
	if n != nil && n.meta.BootID == boot {
		c.byes[name] = boot
		if n.state == StateDead {
			n.state = StateLeft
			changed = true
		}
	}
	c.mu.Unlock()
	if changed {
		c.signal()
	}
}

func (c *Cluster) pruneWarned(now time.Time) {
	c.mu.Lock()
	for k, t := range c.warned {
		if now.Sub(t) >= identityWarnEvery {
			delete(c.warned, k)
		}
	}
	c.mu.Unlock()
}
