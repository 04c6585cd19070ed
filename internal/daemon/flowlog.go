package daemon

import (
	"net/netip"

	"github.com/vrouter/vrouter/internal/flowlog"
	"github.com/vrouter/vrouter/internal/records"
	"github.com/vrouter/vrouter/router"
)

// flowTableSize is the number of flows the flow log tracks at once (about
// 100 bytes each); past it new flows are counted as dropped, not logged.
const flowTableSize = 1 << 16

// startFlowLog turns flow accounting on in the router and starts the
// logger that writes cfg.FlowLog.
func (d *Daemon) startFlowLog() error {
	ft := router.NewFlowTable(flowTableSize)
	l, err := flowlog.Start(flowlog.Config{
		Path:     d.cfg.FlowLog,
		MaxSize:  d.cfg.FlowLogMaxSize,
		Table:    ft,
		Describe: (*flowDescriber)(d),
		Logger:   d.log.With("component", "flowlog"),
	})
	if err != nil {
		return err
	}
	d.flowTable, d.flowLog = ft, l
	d.router.EnableFlows(ft)
	return nil
}

// closeFlowLog stops flow accounting and writes the flows still open;
// before the registry is taken apart, so that they are still described.
func (d *Daemon) closeFlowLog() error {
	if d.flowLog == nil {
		return nil
	}
	d.router.EnableFlows(nil)
	return d.flowLog.Close()
}

// flowDescriber is the daemon as the flow log's Describer.
type flowDescriber Daemon

var _ flowlog.Describer = (*flowDescriber)(nil)

func (f *flowDescriber) Network(vni uint32) string {
	d := (*Daemon)(f)
	d.mu.Lock()
	var pn string
	for _, n := range d.reg.networks {
		if n.vni == vni {
			pn = n.id
		}
	}
	d.mu.Unlock()
	o := d.obs
	o.mu.Lock()
	defer o.mu.Unlock()
	if pn != "" {
		o.pnOf[vni] = pn
		return pn
	}
	return o.pnOf[vni]
}

// Endpoint reads the container's record: the store knows local and
// remote containers alike, and who owns them.
func (f *flowDescriber) Endpoint(pn string, ip netip.Addr) (flowlog.Endpoint, bool) {
	d := (*Daemon)(f)
	e, ok := d.cluster.Store().Winner(records.ContainerKey(pn, ip))
	if !ok {
		return flowlog.Endpoint{}, false
	}
	c, err := records.DecodeContainer(e.Value)
	if err != nil {
		return flowlog.Endpoint{}, false
	}
	return flowlog.Endpoint{App: c.App, Type: c.Type, Container: c.ID, Node: e.Owner}, true
}

// EgressSource: an app with gateways leaves through the IP that takes its
// new flows now (the primary if healthy). A flow pinned to the other
// gateway before a failover is reported with the IP of now.
func (f *flowDescriber) EgressSource(app string) (bool, netip.Addr) {
	d := (*Daemon)(f)
	tgs := d.egress.Assigner.Targets(app)
	if len(tgs) == 0 {
		return false, netip.Addr{}
	}
	for _, tg := range tgs {
		if tg.Healthy {
			return true, tg.IP
		}
	}
	return true, netip.Addr{}
}
