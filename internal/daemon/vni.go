package daemon

import (
	"context"

	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/records"
)

// claimVNI returns the VNI of network pn: the local network's, or one
// claimed in the cluster (records.ClaimVNI: the network's VNI if another
// node serves it, else its first free candidate; a VNI another network
// holds is never taken). The caller calls claimedVNI once the network is
// registered or its attach failed.
func (d *Daemon) claimVNI(ctx context.Context, pn string) (uint32, error) {
	d.mu.Lock()
	d.reg.claiming[pn]++
	if n := d.reg.networks[pn]; n != nil {
		d.mu.Unlock()
		return n.vni, nil
	}
	d.mu.Unlock()
	v, err := records.ClaimVNI(ctx, d.cluster.Store(), pn, d.cluster.SettleTime())
	if err != nil {
		d.claimedVNI(pn)
		return 0, control.Errorf(control.CodeUnavailable, "network %s: %v", pn, err)
	}
	d.mu.Lock()
	d.reg.vnis[pn] = v
	d.mu.Unlock()
	return v, nil
}

// claimedVNI ends what claimVNI started.
func (d *Daemon) claimedVNI(pn string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.reg.claiming[pn]--; d.reg.claiming[pn] <= 0 {
		delete(d.reg.claiming, pn)
	}
}

// releaseVNIsLocked withdraws the VNI claims of networks that have no
// local container and no attach claiming them. Callers hold d.mu (the
// store never calls back into the daemon).
func (d *Daemon) releaseVNIsLocked() {
	st := d.cluster.Store()
	for pn, v := range d.reg.vnis {
		if d.reg.networks[pn] != nil || d.reg.claiming[pn] > 0 {
			continue
		}
		records.ReleaseVNI(st, v)
		delete(d.reg.vnis, pn)
	}
}
