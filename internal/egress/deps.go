package egress

import (
	"log/slog"
	"net/netip"
	"time"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/records"
	"github.com/vrouter/vrouter/router"
)

// Members is what egress reads and writes of the cluster's membership.
type Members interface {
	Nodes() []cluster.Node
	SetMeta(cluster.NodeMeta) error
}

// Store is the subset of the cluster store that egress uses: its records
// are eip/ and ereq/ (internal/records).
type Store interface {
	List(prefix string) []cluster.Entry
	Put(key string, value []byte) cluster.Entry
	Delete(key string)
}

// Datapath is what egress configures in the router. owner names the
// network (or records.EgressNet) that owns vni's table: the router refuses
// an entry for a VNI another owner holds.
type Datapath interface {
	SetRemote(vni uint32, owner string, addr, node netip.Addr) error
	RemoveRemote(vni uint32, owner string, addr netip.Addr)
	SetLocal(vni uint32, owner string, l router.Local, opts router.LocalOptions) error
	SetEgressReturn(vni, network uint32, pn string, gateways []netip.Addr) error
	ProbeOverlay(nodes []netip.Addr)
	OverlaySeen(node netip.Addr) time.Time
}

// Port is a local container's port, whose egress route the path sets.
type Port interface {
	SetEgress(*router.EgressRoute) error
}

// Local is one container of this node.
type Local struct {
	ID      string
	App     string
	Network string
	Port    Port
}

// AppNet is an app's presence in one network: one egress VNI.
type AppNet struct{ App, Network string }

// LocalApps is what egress reads of this node's containers. Its methods
// may take the owner's registry lock; they call nothing in egress.
type LocalApps interface {
	// Apps returns the apps with containers on this node.
	Apps() []string
	// AppNets returns the (app, network) pairs with containers on this
	// node.
	AppNets() []AppNet
	// Containers returns this node's containers of apps.
	Containers(apps []string) []Local
	// NetworkVNI returns the VNI this node claimed for a network with
	// local containers (records.ClaimVNI); false: none.
	NetworkVNI(pn string) (uint32, bool)
}

// NAT is a gateway's NAT of one app's IP for one network's egress VNI:
// the router delivers the egress VNI's frames to it.
type NAT interface {
	router.Local
	Close() error
}

// Deps is what a Service is built from.
type Deps struct {
	Self     string         // this node's name
	StateDir string         // egress.json lives here
	IPs      []netip.Addr   // this node's egress IPs; none: not a gateway
	Probe    netip.AddrPort // the gateway probe's target outside; only with IPs

	Members  Members
	Store    Store
	Datapath Datapath
	Apps     LocalApps
	View     *records.ContainerView // the container claims that gateway NATs follow
	// NewNAT starts the NAT of ip for egress VNI vni; the path hooks it to
	// the Datapath and closes it when no container needs it.
	NewNAT func(vni uint32, ip netip.Addr) (NAT, error)

	Logger *slog.Logger
	// OpTimeout bounds an enable or disable; 0: 10 s.
	OpTimeout time.Duration
}
