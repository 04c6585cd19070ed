package control

import (
	"encoding/json"
	"fmt"
	"time"
)

// Version is the protocol version carried in every request and response.
// A daemon refuses requests of any other version with code "version".
const Version = 1

// Ops understood by the daemon.
const (
	OpAttach     = "attach"
	OpDetach     = "detach"
	OpContainers = "containers"
	OpStatus     = "status"
	OpPeers      = "peers"
	OpNames      = "names"
	OpEgress     = "egress"
	OpGateway    = "gateway"
	OpUnpin      = "unpin"
	OpUpgrade    = "upgrade"
)

// Request is the single message a client sends on a connection. Exactly the
// body matching Op is present. An "attach" request carries the TUN fd as
// SCM_RIGHTS ancillary data of the same message.
type Request struct {
	Version int             `json:"version"`
	Op      string          `json:"op"` // see the Op constants
	Attach  *AttachRequest  `json:"attach,omitempty"`
	Detach  *DetachRequest  `json:"detach,omitempty"`
	Names   *NamesRequest   `json:"names,omitempty"`
	Egress  *EgressRequest  `json:"egress,omitempty"`
	Gateway *GatewayRequest `json:"gateway,omitempty"`
	Unpin   *UnpinRequest   `json:"unpin,omitempty"`
	Upgrade *UpgradeRequest `json:"upgrade,omitempty"`
}

// UpgradeRequest asks the supervisor to replace the worker with one
// running Binary ("" for the path `vrouter run` was started from).
type UpgradeRequest struct {
	Binary string `json:"binary,omitempty"`
}

// UpgradeStarted is the result of "upgrade": the attempt's number. The
// upgrade is over once status's supervisor.upgrade_attempts reaches it;
// supervisor.last_upgrade then says how it went.
type UpgradeStarted struct {
	Attempt int `json:"attempt"`
}

// UnpinRequest removes the signing key pinned to a peer's name, so that
// the next key it presents is trusted (after the node was reinstalled).
type UnpinRequest struct {
	Name string `json:"name"`
}

// NamesRequest asks for the DNS names of an app, in one network or all.
type NamesRequest struct {
	App     string `json:"app"`
	Network string `json:"network,omitempty"`
}

// Name is one DNS name of an app and the addresses it resolves to now.
// Type and Number are empty for the app's own name (its web containers),
// Number for a type's name.
type Name struct {
	Name      string   `json:"name"`
	Network   string   `json:"network"`
	Type      string   `json:"type,omitempty"`
	Number    int      `json:"number,omitempty"`
	Addresses []string `json:"addresses"`
}

// AttachRequest asks the daemon to attach the TUN passed with the request.
type AttachRequest struct {
	Network      string `json:"network"`
	App          string `json:"app"`
	Type         string `json:"type"`
	Number       int    `json:"number,omitempty"`
	IP           string `json:"ip,omitempty"`
	ContainerKey string `json:"container_key,omitempty"` // netns identity, to refuse a second attach
	Interface    string `json:"interface,omitempty"`
	Netns        string `json:"netns,omitempty"`
	// CNI names the attachment when a CNI plugin made it; the plugin finds
	// the port again by it for DEL, CHECK and GC.
	CNI *CNIAttachment `json:"cni,omitempty"`
}

// CNIAttachment is a CNI runtime's name for one port: the container id
// and interface the runtime passed, and the name of the CNI network
// configuration (not the PN id: several configurations may share a PN).
type CNIAttachment struct {
	ContainerID string `json:"container_id"`
	Network     string `json:"network"`
	IfName      string `json:"ifname"`
}

// MaxCNIField bounds each field of a CNIAttachment.
const MaxCNIField = 256

// Check refuses empty or oversized fields.
func (a *CNIAttachment) Check() error {
	for _, f := range []struct{ name, val string }{{"container id", a.ContainerID}, {"network name", a.Network}, {"interface", a.IfName}} {
		if f.val == "" {
			return fmt.Errorf("cni attachment: %s is empty", f.name)
		}
		if len(f.val) > MaxCNIField {
			return fmt.Errorf("cni attachment: %s longer than %d bytes", f.name, MaxCNIField)
		}
	}
	return nil
}

// DetachRequest names the container to detach.
type DetachRequest struct {
	ID string `json:"id"`
}

// Response is the daemon's answer: either Error or Result (the JSON of the
// op's result: Container for attach, []Container for containers, Status for
// status, nothing for detach).
type Response struct {
	Version int             `json:"version"`
	Error   *Error          `json:"error,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
}

// Container describes one attached container.
type Container struct {
	ID         string         `json:"id"`
	Network    string         `json:"network"`
	App        string         `json:"app"`
	Type       string         `json:"type"`
	Number     int            `json:"number"`
	IP         string         `json:"ip"`
	MTU        int            `json:"mtu"`
	Resolver   string         `json:"resolver"`
	Names      []string       `json:"names"`
	Interface  string         `json:"interface,omitempty"`
	Netns      string         `json:"netns,omitempty"`    // namespace path given at attach, if any
	NetnsID    string         `json:"netns_id,omitempty"` // the AttachRequest's container_key
	CNI        *CNIAttachment `json:"cni,omitempty"`      // set when a CNI plugin attached it
	Node       string         `json:"node"`
	AttachedAt time.Time      `json:"attached_at"`
}

// Status is the result of the "status" op.
type Status struct {
	// Pid is the forwarding worker's process; StartedAt when it started.
	Pid       int       `json:"pid"`
	StartedAt time.Time `json:"started_at"`
	// SupervisorPID is the process holding the ports (0 when none, e.g.
	// under systemd, whose fd store holds them); Restarts counts the
	// workers it started again after one died (upgrades are counted in
	// Supervisor.Upgrades).
	SupervisorPID int               `json:"supervisor_pid"`
	Restarts      int               `json:"restarts"`
	Supervisor    *SupervisorStatus `json:"supervisor,omitempty"`
	Node          string            `json:"node"`
	Version       string            `json:"version"`
	UptimeSeconds float64           `json:"uptime_seconds"`
	Control       string            `json:"control"`
	MTU           int               `json:"mtu"`
	Containers    int               `json:"containers"`
	Networks      int               `json:"networks"`
	Counters      map[string]uint64 `json:"counters"`
	Drops         map[string]uint64 `json:"drops"`
	DNS           *DNSStatus        `json:"dns,omitempty"`
	// Egress sums node egress over the networks with local containers
	// (closed networks' counts are gone with their netstacks).
	Egress map[string]uint64 `json:"egress,omitempty"`
	// Budget is the node-wide budget of node egress (all networks'
	// stacks and gateway NATs together).
	Budget *BudgetStatus `json:"budget,omitempty"`
	// Cluster holds the gossip store's and the identity checks' counters
	// (records_bad_signature, meta_key_changed, claims_lost, ...).
	Cluster map[string]uint64 `json:"cluster,omitempty"`
	// Alarms are conditions an operator must fix, one line each: peers left
	// out of the overlay (a WireGuard key or overlay address another node
	// also advertises), networks whose VNI claim was lost.
	Alarms []string `json:"alarms,omitempty"`
}

// BudgetStatus is the node egress budget: limits (--egress-max-fds,
// --egress-max-memory), what is held now, and new flows refused by reason
// (node_fds, node_memory, network_share, container_share, container_max;
// each refusal gave the container a RST or an ICMP error).
type BudgetStatus struct {
	MaxFDs    int               `json:"max_fds"`
	FDs       int               `json:"fds"` // host sockets held now
	MaxMemory int64             `json:"max_memory_bytes"`
	Memory    int64             `json:"memory_bytes"` // worst case of the flows open now
	Networks  int               `json:"networks"`     // networks holding something now
	Refused   map[string]uint64 `json:"refused"`
}

// SupervisorStatus is the port holder's part of Status.
type SupervisorStatus struct {
	StartedAt time.Time `json:"started_at"`
	LastExit  string    `json:"last_exit,omitempty"` // how the last worker ended
	// CrashLoop is set when workers keep dying soon after they start;
	// BackoffSeconds is the wait before this worker's start.
	CrashLoop       bool    `json:"crash_loop"`
	BackoffSeconds  float64 `json:"backoff_seconds"`
	Upgrades        int     `json:"upgrades"`
	UpgradeAttempts int     `json:"upgrade_attempts"`
	LastUpgrade     string  `json:"last_upgrade,omitempty"` // "ok" or why it failed
	// Dropped lists ports closed because their fd did not come back
	// (a supervisor restart) or their handover failed.
	Dropped       []string `json:"dropped,omitempty"`
	RestoreFailed uint64   `json:"restore_failed"`
}

// DNSStatus is the resolver's part of Status.
type DNSStatus struct {
	Resolver  string            `json:"resolver"`  // the address containers query
	Upstreams []string          `json:"upstreams"` // where other names are forwarded
	Rcodes    map[string]uint64 `json:"rcodes"`    // responses sent, by rcode
	Counters  map[string]uint64 `json:"counters"`  // local, forwarded, cache_hits, upstream_errors, tcp_retries, flood, truncated
}

// Peer describes one node of the cluster as this daemon sees it.
type Peer struct {
	Name      string    `json:"name"`
	Address   string    `json:"address"` // gossip address
	State     string    `json:"state"`   // alive, suspect, dead, left
	Self      bool      `json:"self"`
	Overlay   string    `json:"overlay"`
	PublicKey string    `json:"public_key,omitempty"` // WireGuard, base64
	Endpoint  string    `json:"endpoint,omitempty"`   // WireGuard
	EgressIPs []string  `json:"egress_ips,omitempty"` // a gateway's dedicated egress addresses
	Draining  bool      `json:"draining,omitempty"`   // a gateway in maintenance: no new egress flows
	Unhealthy bool      `json:"unhealthy,omitempty"`  // a gateway whose probe of the outside fails
	Since     time.Time `json:"since"`
	// Identity is "ok" when the node's metadata is signed by the key
	// pinned for its name, "unsigned" or "key_changed" when it is refused
	// (no traffic, no records merged); SigningKey is that key, base64.
	Identity   string `json:"identity"`
	SigningKey string `json:"signing_key,omitempty"`
	// Conflict says why this node is left out of the overlay:
	// "duplicate_wg_key" or "duplicate_overlay" (another alive node
	// advertises the same WireGuard key or overlay address); absent when it
	// is not.
	Conflict string `json:"conflict,omitempty"`
	// LastHandshake is the last WireGuard handshake with this node; absent
	// for this node and for nodes never handshaken with.
	LastHandshake *time.Time `json:"last_handshake,omitempty"`
}
