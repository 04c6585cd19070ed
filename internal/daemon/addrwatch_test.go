package daemon

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vrouter/vrouter/internal/poll"
	"github.com/vrouter/vrouter/internal/ratelog"
	"github.com/vrouter/vrouter/stack"
)

// TestWatchAddrsRefreshesDenyList: an address notification makes the
// daemon read the host's addresses again and replace the deny list every
// stack reads (loopback stays out of it); the loop ends with its context.
func TestWatchAddrsRefreshesDenyList(t *testing.T) {
	a1, a2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.55")
	d := &Daemon{log: slog.New(slog.DiscardHandler), rlog: ratelog.New(slog.New(slog.DiscardHandler), 0), deny: stack.NewDenyList([]netip.Addr{a1})}
	host := make(chan []netip.Addr, 1)
	current := []netip.Addr{a1}
	list := func() ([]netip.Addr, error) {
		select {
		case current = <-host:
		default:
		}
		return current, nil
	}
	updates := make(chan chan<- netlink.AddrUpdate, 1)
	subscribe := func(ch chan<- netlink.AddrUpdate, done <-chan struct{}, _ func(error)) error {
		updates <- ch
		go func() {
			<-done
			close(ch)
		}()
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.loops.Add(1)
	go d.watchAddrs(ctx, subscribe, list)
	ch := <-updates

	host <- []netip.Addr{a1, a2, netip.MustParseAddr("127.0.0.1")}
	ch <- netlink.AddrUpdate{NewAddr: true}
	poll.Until(t, 5*time.Second, "the new address in the deny list", func() bool { return d.deny.Has(a2) })
	if d.deny.Has(netip.MustParseAddr("127.0.0.1")) || !d.deny.Has(a1) {
		t.Fatalf("deny list after the change: %d addresses", d.deny.Len())
	}

	host <- []netip.Addr{a2}
	ch <- netlink.AddrUpdate{}
	poll.Until(t, 5*time.Second, "the removed address out of the deny list", func() bool { return !d.deny.Has(a1) })
	if d.addrRefreshes.Load() < 2 {
		t.Fatalf("%d refreshes", d.addrRefreshes.Load())
	}
	cancel()
	d.loops.Wait()
}

// TestNetlinkAddrsStops: the real subscription starts without privileges
// and ends (its channel closed) once done is closed, so Close never waits
// on a blocked netlink read.
func TestNetlinkAddrsStops(t *testing.T) {
	ch := make(chan netlink.AddrUpdate, 8)
	done := make(chan struct{})
	if err := netlinkAddrs(ch, done, func(error) {}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	close(done)
	timeout := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("the subscription did not end after done was closed")
		}
	}
}
