package metrics

import (
	"time"

	"github.com/vrouter/vrouter/internal/hist"
	"github.com/vrouter/vrouter/router"
)

// Source is what the server reads: the daemon implements it. Both methods
// are called per request, concurrently, and must not block on packet I/O.
type Source interface {
	// Snapshot returns the node's counters now. The collectors read
	// nothing else, so a scrape costs one Snapshot.
	Snapshot() *Snapshot
	// Ready returns nil when the node can serve containers across the
	// cluster, else why not (the body of a failing /readyz).
	Ready() error
}

// Snapshot is the node's state at one instant, in plain values. Counters
// only grow; gauges are values now. Slices are in any order.
type Snapshot struct {
	Containers []Container
	Networks   []Network
	// Drops counts every drop reason of the node (router.DropReasons, also
	// the overlay's inbound drops and those of detached ports).
	Drops map[string]uint64
	// Router holds the router's other counters as `vrouter status`
	// reports them (icmp_sent, read_errors, gso_split, …).
	Router        map[string]uint64
	PortsAttached int
	// Networks with local containers now (the stacks the node runs).
	NetworksLocal int
	AttachLatency hist.Snapshot
	// Alarms is the number of status alarms (conditions an operator must
	// fix: a peer left out of the overlay, a lost VNI claim).
	Alarms int

	Peers     []Peer
	DNS       DNS
	Egress    NodeEgress
	Gateway   []DedicatedEgress
	Failovers []Failover
	Cluster   Cluster
	Budget    Budget
	// Worker is nil without a supervisor (a daemon run in-process).
	Worker *Worker
	// FlowLog is nil when flow logs are off.
	FlowLog *FlowLog
}

// Budget is the node egress budget (status `budget`).
type Budget struct {
	MaxFDs, FDs       int
	MaxMemory, Memory int64
	Networks          int               // tenants holding something now
	Refused           map[string]uint64 // new flows refused, by reason
	// Tenants holding something now: the networks' stacks by PN id, the
	// gateway NATs by "gateway VNI". A container's own share is in its
	// Container.
	Tenants []BudgetTenant
}

// BudgetTenant is what one network (or gateway NAT) holds of the budget.
type BudgetTenant struct {
	Network string
	FDs     int
	Memory  int64
}

// Worker is the supervisor's view of the forwarding worker (status
// `restarts` and `supervisor`).
type Worker struct {
	Restarts        int // workers started again after one died
	CrashLoop       bool
	BackoffSeconds  float64
	Upgrades        int
	UpgradeAttempts int
	RestoreFailed   uint64 // handed-over ports this worker could not rebuild
	PortsDropped    int    // ports closed because their fd did not come back
}

// FlowLog is the state of --flow-log.
type FlowLog struct {
	Slots, Live      int    // flow table size, flows in it now
	Created, Dropped uint64 // flows tracked; new flows not tracked (table full)
	Records          uint64 // lines written
	WriteErrors      uint64
	Rotations        uint64
}

// Container is one attached port.
type Container struct {
	Network, App, Type, ID string
	router.Counters
	// EgressFDs and EgressMemory are what the container's node egress
	// flows hold of the node's budget now.
	EgressFDs    int
	EgressMemory int64
}

// Network is one private network with ports on this node now or before.
type Network struct {
	ID string // pn-…; the VNI in decimal when the network is no longer known
	router.Counters
}

// Peer is another node of the cluster as the overlay sees it.
type Peer struct {
	Name string
	// Up: the cluster says the node is alive and a WireGuard peer is
	// configured for its key.
	Up               bool
	RxBytes, TxBytes uint64
	LastHandshake    time.Time // zero: never
}

// DNS is the resolver's counters.
type DNS struct {
	Local, Forwarded, CacheHits uint64
	UpstreamErrors, TCPRetries  uint64
	Flood, Truncated            uint64
	FloodNetwork                uint64 // of Flood, refused for the network's share
	TCPRefused                  uint64 // DNS-over-TCP connections refused by the stacks' bound
	RateDropped, RateRefused    uint64 // queries over their network's share of the query rate: dropped, answered REFUSED
	Rcodes                      map[string]uint64
	SlotsInUse, Slots           int
	UpstreamLatency             hist.Snapshot
}

// NodeEgress is egress through this node's own address (packet path 4),
// summed over the networks' netstacks.
type NodeEgress struct {
	TCPDials, TCPRefused, TCPFailed, TCPActive uint64
	UDPFlows, UDPActive                        uint64
	PingsSent, PingReplies, PingErrors         uint64
	Denied, Limited                            uint64
	DenyAddrs                                  int    // the node's own addresses refused as destinations
	DenyRefreshes                              uint64 // times the host's address changes refreshed them
}

// DedicatedEgress is one (app, egress IP) of dedicated egress as this node
// sees it (every node knows every app's assignments).
type DedicatedEgress struct {
	App, EgressIP, Gateway string
	Active                 bool   // new flows of the app leave through this IP now (as this node routes them)
	Healthy                bool   // the gateway takes new flows: alive, not draining or unhealthy, answering probes
	Draining               bool   // the gateway is drained for maintenance
	Flows                  uint64 // on the IP's gateway: flows its NATs opened; 0 elsewhere
}

// Failover is the failovers of one app's dedicated egress seen by this
// node: the active gateway of the app changed while it had one.
type Failover struct {
	App   string
	Total uint64
	Last  time.Time // zero: none yet
}

// Cluster is the gossip layer's state.
type Cluster struct {
	Members map[string]int // by state: alive, suspect, dead, left
	// Messages are the store's gossip messages received, by result: ok,
	// bad_version, malformed.
	Messages         map[string]uint64
	RecordsApplied   uint64
	RecordsDuplicate uint64
	RecordsRejected  uint64
	// RecordsRefused are records dropped by the identity checks, by
	// reason: stale, bad_signature, unknown_signer, bad_claim.
	RecordsRefused   map[string]uint64
	Records          map[string]int // live records by kind
	Tombstones       int
	ClaimConflicts   uint64 // claims this node lost to another node, at once or later (fenced)
	QueuedBroadcasts int
	MetaErrors       uint64
	// MetaRefused is peers' metadata refused by the identity checks, by
	// reason: unsigned, key_changed, stale.
	MetaRefused map[string]uint64
	// GossipWarnings counts memberlist's warnings and errors,
	// GossipUndecryptable those about packets that failed to decrypt.
	GossipWarnings, GossipUndecryptable uint64
	// GossipSocketErrors counts failed gossip socket reads and accepts.
	GossipSocketErrors uint64
}
