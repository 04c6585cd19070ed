package egress

import (
	"context"
	"net"
	"net/netip"
	"time"
)

// The gateway probe of the outside (--egress-probe ADDR:PORT): a TCP
// connection from the gateway's first egress IP every
// gatewayProbeInterval. gatewayProbeFailures failures in a row mark the
// gateway unhealthy in its gossip metadata, so workers send new flows of
// its apps to their other gateway; gatewayProbeSuccesses successes in a
// row mark it healthy again. A few probes rather than one keep a single
// lost SYN from failing a gateway over.
const (
	gatewayProbeInterval  = 500 * time.Millisecond
	gatewayProbeTimeout   = time.Second
	gatewayProbeFailures  = 2
	gatewayProbeSuccesses = 2
)

// gatewayProbe runs on gateways with a probe target until ctx ends.
func (a *Assigner) gatewayProbe(ctx context.Context, src netip.Addr, target netip.AddrPort) {
	dialer := net.Dialer{Timeout: gatewayProbeTimeout, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
	tick := time.NewTicker(gatewayProbeInterval)
	defer tick.Stop()
	healthy, streak := true, 0
	for {
		c, err := dialer.DialContext(ctx, "tcp", target.String())
		if err == nil {
			c.Close()
		}
		if ctx.Err() != nil {
			return
		}
		if ok := err == nil; ok != healthy {
			streak++
			need := gatewayProbeFailures
			if ok {
				need = gatewayProbeSuccesses
			}
			if streak >= need {
				healthy, streak = ok, 0
				a.setUnhealthy(!healthy, err)
			}
		} else {
			streak = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// setUnhealthy publishes the probe's verdict in the node's metadata.
func (a *Assigner) setUnhealthy(on bool, cause error) {
	a.drainMu.Lock() // the same metadata as drain: one writer at a time
	defer a.drainMu.Unlock()
	meta := a.selfMeta()
	if meta.Unhealthy == on {
		return
	}
	meta.Unhealthy = on
	if err := a.members.SetMeta(meta); err != nil {
		a.log.Error("publish gateway health", "err", err)
		return
	}
	if on {
		a.log.Warn("gateway cannot reach the outside: no new dedicated egress flows", "probe", a.probe, "err", cause)
	} else {
		a.log.Info("gateway reaches the outside again", "probe", a.probe)
	}
	a.refreshView()
}

// overlayProbe runs on every node until ctx ends: see Path.probeOverlay.
func (p *Path) overlayProbe(ctx context.Context) {
	tick := time.NewTicker(overlayProbeInterval)
	defer tick.Stop()
	for {
		p.probeOverlay(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
