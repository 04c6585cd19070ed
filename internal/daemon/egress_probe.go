package daemon

import (
	"context"
	"net"
	"net/netip"
	"time"
)

// The gateway's probe of the outside (--egress-probe ADDR:PORT): a TCP
// connection from its first egress IP every probeInterval. probeFailures
// failures in a row mark the gateway unhealthy in its gossip metadata, so
// workers send new flows of its apps to their other gateway;
// probeSuccesses successes in a row mark it healthy again. A few probes
// rather than one keep a single lost SYN from failing a gateway over.
const (
	probeInterval  = 500 * time.Millisecond
	probeTimeout   = time.Second
	probeFailures  = 2
	probeSuccesses = 2
)

// probeLoop runs on gateways with a probe target until the daemon closes.
func (d *Daemon) probeLoop(ctx context.Context, target netip.AddrPort) {
	defer d.loops.Done()
	src := d.cfg.EgressIPs[0]
	dialer := net.Dialer{Timeout: probeTimeout, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
	tick := time.NewTicker(probeInterval)
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
			need := probeFailures
			if ok {
				need = probeSuccesses
			}
			if streak >= need {
				healthy, streak = ok, 0
				d.setUnhealthy(!healthy, err)
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
func (d *Daemon) setUnhealthy(on bool, cause error) {
	st := d.egressAssign()
	st.drainMu.Lock() // the same metadata as drain: one writer at a time
	defer st.drainMu.Unlock()
	meta := d.selfMeta()
	if meta.Unhealthy == on {
		return
	}
	meta.Unhealthy = on
	if err := d.cluster.SetMeta(meta); err != nil {
		d.log.Error("publish gateway health", "err", err)
		return
	}
	if on {
		d.log.Warn("gateway cannot reach the outside: no new dedicated egress flows", "probe", d.cfg.EgressProbe, "err", cause)
	} else {
		d.log.Info("gateway reaches the outside again", "probe", d.cfg.EgressProbe)
	}
	d.refreshEgressView()
}
