package daemon

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vrouter/vrouter/internal/hist"
	"github.com/vrouter/vrouter/internal/metrics"
	"github.com/vrouter/vrouter/internal/records"
	"github.com/vrouter/vrouter/stack"
)

// The daemon is the metrics.Source of `vrouter run --metrics-listen`:
// everything here runs per scrape, off the data path.
var _ metrics.Source = (*Daemon)(nil)

// attachBuckets cover an attach alone (milliseconds) up to claims that
// wait for gossip to settle in a large cluster (seconds).
var attachBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// recordKinds names the record families counted by kind.
var recordKinds = map[string]string{
	"container":      records.ContainerPrefix,
	"number":         records.NumberPrefix,
	"egress_ip":      records.EIPPrefix,
	"egress_request": records.EgressRequestPrefix,
}

// observed is what the daemon counts for metrics only.
type observed struct {
	attach *hist.Histogram
	joined atomic.Bool // joinLoop succeeded once
	// restoreFailed counts handed-over ports that could not be rebuilt.
	restoreFailed atomic.Uint64

	mu sync.Mutex
	// pnOf remembers the PN id of every VNI seen with local containers, so
	// that a network's counters keep their label after it is gone.
	pnOf map[uint32]string
	// egress sums the node egress counters of closed network stacks.
	egress stack.EgressStats
}

func newObserved() *observed {
	return &observed{attach: hist.New(attachBuckets...), pnOf: make(map[uint32]string)}
}

// retireEgress keeps the counters of a network stack being closed.
func (o *observed) retireEgress(e stack.EgressStats) {
	o.mu.Lock()
	defer o.mu.Unlock()
	addEgress(&o.egress, e)
	// Gauges of a closed stack are 0 now.
	o.egress.TCPActive, o.egress.UDPActive = 0, 0
}

func addEgress(sum *stack.EgressStats, e stack.EgressStats) {
	sum.TCPDials += e.TCPDials
	sum.TCPRefused += e.TCPRefused
	sum.TCPFailed += e.TCPFailed
	sum.TCPActive += e.TCPActive
	sum.UDPFlows += e.UDPFlows
	sum.UDPActive += e.UDPActive
	sum.PingsSent += e.PingsSent
	sum.PingReplies += e.PingReplies
	sum.PingErrors += e.PingErrors
	sum.Denied += e.Denied
	sum.Limited += e.Limited
}

// Snapshot implements metrics.Source.
func (d *Daemon) Snapshot() *metrics.Snapshot {
	o := d.obs
	st := d.router.Stats()
	s := &metrics.Snapshot{
		Drops:         st.Drops,
		Router:        st.Counters,
		PortsAttached: st.Ports,
		AttachLatency: o.attach.Snapshot(),
		Alarms:        len(d.alarms()), // before d.mu: remotes.mu comes first
	}
	bs, shares := d.budget.Stats(), d.budget.Shares()
	s.Budget = metrics.Budget{
		MaxFDs: bs.Limits.FDs, FDs: bs.FDsUsed, MaxMemory: bs.Limits.Memory, Memory: bs.MemoryUsed,
		Networks: bs.Networks, Refused: bs.Refused,
	}
	for name, sh := range shares {
		s.Budget.Tenants = append(s.Budget.Tenants, metrics.BudgetTenant{Network: name, FDs: sh.FDs, Memory: sh.Memory})
	}

	var egress stack.EgressStats
	var dnsTCPRefused uint64
	d.mu.Lock()
	s.NetworksLocal = len(d.reg.networks)
	for _, c := range d.reg.containers {
		// A container's share is under its network's stack, by its address.
		own := shares[c.info.Network].Clients[c.addr]
		s.Containers = append(s.Containers, metrics.Container{
			Network: c.info.Network, App: c.info.App, Type: c.info.Type, ID: c.info.ID,
			Counters:  c.attached.Counters(),
			EgressFDs: own.FDs, EgressMemory: own.Memory,
		})
	}
	o.mu.Lock()
	for _, n := range d.reg.networks {
		o.pnOf[n.vni] = n.id
	}
	// Under d.mu: staleStacksLocked retires a stack as it leaves d.stacks,
	// so none is counted twice or missed.
	egress = o.egress
	o.mu.Unlock()
	for _, ns := range d.stacks {
		addEgress(&egress, ns.stack.EgressStats())
		dnsTCPRefused += ns.stack.Stats().DNSTCPRefused
	}
	d.mu.Unlock()

	nets := d.router.NetworkCounters()
	o.mu.Lock()
	for vni, c := range nets {
		id := o.pnOf[vni]
		if id == "" {
			id = "vni-" + strconv.FormatUint(uint64(vni), 10)
		}
		s.Networks = append(s.Networks, metrics.Network{ID: id, Counters: c})
	}
	o.mu.Unlock()

	s.Egress = metrics.NodeEgress{
		TCPDials: egress.TCPDials, TCPRefused: egress.TCPRefused, TCPFailed: egress.TCPFailed,
		TCPActive: egress.TCPActive, UDPFlows: egress.UDPFlows, UDPActive: egress.UDPActive,
		PingsSent: egress.PingsSent, PingReplies: egress.PingReplies, PingErrors: egress.PingErrors,
		Denied: egress.Denied, Limited: egress.Limited,
		DenyAddrs: d.deny.Len(), DenyRefreshes: d.addrRefreshes.Load(),
	}

	ds := d.resolver.Stats()
	s.DNS = metrics.DNS{
		Local: ds.Local, Forwarded: ds.Forwarded, CacheHits: ds.CacheHits,
		UpstreamErrors: ds.UpstreamErrors, TCPRetries: ds.TCPRetries,
		Flood: ds.Flood, FloodNetwork: ds.FloodNetwork, Truncated: ds.Truncated, Rcodes: ds.Rcodes,
		TCPRefused: dnsTCPRefused, RateDropped: ds.RateDropped, RateRefused: ds.RateRefused,
		SlotsInUse: ds.Inflight, Slots: ds.MaxInflight, UpstreamLatency: ds.UpstreamLatency,
	}

	wg := d.wgStatus()
	s.Cluster.Members = make(map[string]int)
	for _, n := range d.cluster.Nodes() {
		s.Cluster.Members[n.State.String()]++
		if n.Self {
			continue
		}
		p := metrics.Peer{Name: n.Name}
		if w, ok := wg[n.Meta.WGPublicKey]; ok && n.Meta.WGPublicKey != ([32]byte{}) {
			p.Up = n.State.String() == "alive"
			p.RxBytes, p.TxBytes, p.LastHandshake = w.RxBytes, w.TxBytes, w.LastHandshake
		}
		s.Peers = append(s.Peers, p)
	}
	cs := d.cluster.Stats()
	s.Cluster.Messages = map[string]uint64{
		"ok":          cs.MsgsReceived - cs.MsgsBadVersion - cs.MsgsMalformed,
		"bad_version": cs.MsgsBadVersion,
		"malformed":   cs.MsgsMalformed,
	}
	s.Cluster.RecordsApplied = cs.RecordsApplied
	s.Cluster.RecordsDuplicate = cs.RecordsDuplicate
	s.Cluster.RecordsRejected = cs.RecordsRejected
	s.Cluster.Tombstones = cs.Tombstones
	s.Cluster.ClaimConflicts = cs.ClaimsRaced + cs.ClaimsLost
	s.Cluster.QueuedBroadcasts = cs.QueuedBroadcast
	s.Cluster.MetaErrors = cs.MetaErrors
	s.Cluster.GossipWarnings, s.Cluster.GossipUndecryptable = cs.GossipWarnings, cs.GossipUndecryptable
	s.Cluster.GossipSocketErrors = cs.GossipSocketErrors
	s.Cluster.RecordsRefused = map[string]uint64{
		"stale":          cs.RecordsStale,
		"bad_signature":  cs.RecordsBadSignature,
		"unknown_signer": cs.RecordsUnknownSigner,
		"bad_claim":      cs.RecordsBadClaim,
	}
	s.Cluster.MetaRefused = map[string]uint64{
		"unsigned":    cs.MetaUnsigned,
		"key_changed": cs.MetaKeyChanged,
		"stale":       cs.MetaStale,
	}
	s.Cluster.Records = make(map[string]int, len(recordKinds))
	store := d.cluster.Store()
	for kind, prefix := range recordKinds {
		s.Cluster.Records[kind] = len(store.List(prefix))
	}
	for _, app := range d.egress.Path.Metrics() {
		for _, tg := range app.Targets {
			s.Gateway = append(s.Gateway, metrics.DedicatedEgress{
				App: app.App, EgressIP: tg.IP.String(), Gateway: tg.Gateway,
				Active: tg.Active, Healthy: tg.Healthy, Draining: tg.Draining, Flows: tg.Flows,
			})
		}
		s.Failovers = append(s.Failovers, metrics.Failover{App: app.App, Total: app.Failovers, Last: app.LastFailover})
	}
	if d.cfg.Supervision != nil {
		h := d.cfg.Supervision()
		s.Worker = &metrics.Worker{
			Restarts: h.Restarts, CrashLoop: h.CrashLoop, BackoffSeconds: h.Backoff,
			Upgrades: h.Upgrades, UpgradeAttempts: h.Attempts,
			RestoreFailed: o.restoreFailed.Load(), PortsDropped: len(h.Dropped),
		}
	}
	if d.flowLog != nil {
		ts, ls := d.flowTable.Stats(), d.flowLog.Stats()
		s.FlowLog = &metrics.FlowLog{
			Slots: d.flowTable.Cap(), Live: ts.Live, Created: ts.Created, Dropped: ts.Dropped,
			Records: ls.Records, WriteErrors: ls.WriteErrors, Rotations: ls.Rotations,
		}
	}
	return s
}

// Ready implements metrics.Source: the node is ready when it is not
// shutting down, its WireGuard device is up with a bound port, and it has
// joined the cluster (a node started without --join is its own cluster).
func (d *Daemon) Ready() error {
	if d.ctx.Err() != nil {
		return errors.New("shutting down")
	}
	if p, err := d.wg.ListenPort(); err != nil || p == 0 {
		return fmt.Errorf("wireguard not configured: port %d, %v", p, err)
	}
	if len(d.cfg.Join) > 0 && !d.obs.joined.Load() {
		return fmt.Errorf("cluster not joined yet (seeds %v)", d.cfg.Join)
	}
	return nil
}

// observeAttach records the duration of a successful attach.
func (d *Daemon) observeAttach(start time.Time) { d.obs.attach.Observe(time.Since(start)) }
