package daemon

import (
	"context"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// The node's own addresses are never egress destinations: a container
// would reach the node's services as if from the node itself. They change
// while the daemon runs (a bridge or a VIP is added, DHCP renumbers), so
// the daemon follows the kernel's address notifications (RTM_NEWADDR and
// RTM_DELADDR) and replaces the deny list every stack reads (AUDIT D5).
// vishvananda/netlink, already used to configure ports, does the netlink
// subscription and message parsing; an unprivileged process may join the
// address multicast groups. On each notification the whole list is read
// again (net.InterfaceAddrs), which also covers missed notifications.

// addrSubscriber starts address notifications into ch until done is
// closed; ch is closed when they end. Tests replace it.
type addrSubscriber func(ch chan<- netlink.AddrUpdate, done <-chan struct{}, onErr func(error)) error

func netlinkAddrs(ch chan<- netlink.AddrUpdate, done <-chan struct{}, onErr func(error)) error {
	return netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{ErrorCallback: onErr})
}

// denyAddrs are the host addresses egress refuses: all but loopback (which
// egress refuses anyway unless --egress-allow-loopback, which is meant to
// reach it).
func denyAddrs(addrs []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		if !a.IsLoopback() {
			out = append(out, a)
		}
	}
	return out
}

// watchAddrs refreshes d.deny on every address change until ctx ends. It
// runs on d.loops.
func (d *Daemon) watchAddrs(ctx context.Context, subscribe addrSubscriber, list func() ([]netip.Addr, error)) {
	defer d.loops.Done()
	ch := make(chan netlink.AddrUpdate, 64)
	if err := subscribe(ch, ctx.Done(), func(err error) {
		if ctx.Err() == nil {
			d.rlog.Warn("addr-subscription", "host address notifications", "err", err)
		}
	}); err != nil {
		d.log.Warn("not following the host's address changes: egress refuses the addresses of the start only", "err", err)
		return
	}
	for range ch {
		// Coalesce a burst (an interface coming up brings several).
		for drained := false; !drained; {
			select {
			case _, ok := <-ch:
				if !ok {
					return
				}
			default:
				drained = true
			}
		}
		addrs, err := list()
		if err != nil {
			d.rlog.Warn("addr-list", "list host addresses", "err", err)
			continue
		}
		deny := denyAddrs(addrs)
		d.deny.Set(deny)
		d.addrRefreshes.Add(1)
		d.log.Debug("host addresses changed: egress deny list refreshed", "addresses", len(deny))
	}
}
