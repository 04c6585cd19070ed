package integration

import (
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/internal/poll"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/stack/stacktest"
)

// resolver is the router's default resolver address, the source of the
// ICMP errors it sends.
var resolver = netip.MustParseAddr("169.254.20.10")

// topology is one router with gVisor containers attached to it. Everything
// is torn down by t.Cleanup: ports are detached before their containers
// close (so the router never sees a dead port), then the router closes,
// then the goroutine count is checked.
type topology struct {
	t      *testing.T
	router *router.Router
}

// netOf is the network id the tests give the router table of VNI vni.
func netOf(vni uint32) string { return fmt.Sprintf("pn-vni-%d", vni) }

// node is one container attached to the topology's router.
type node struct {
	*stacktest.Container
	network  uint32
	attached *router.Attached
}

func newTopology(t *testing.T) *topology {
	t.Helper()
	leaktest.Check(t)
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := router.New(router.Config{Logger: log})
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("router close: %v", err)
		}
	})
	return &topology{t: t, router: r}
}

// add creates a container with addr and attaches it to network.
func (tp *topology) add(network uint32, addr string) *node {
	tp.t.Helper()
	c, err := stacktest.New(stacktest.Config{Addr: netip.MustParseAddr(addr)})
	if err != nil {
		tp.t.Fatalf("container %s: %v", addr, err)
	}
	n := &node{Container: c, network: network}
	tp.t.Cleanup(func() {
		n.detach()
		if err := c.Close(); err != nil {
			tp.t.Errorf("close container %s: %v", addr, err)
		}
	})
	n.attach(tp)
	return n
}

// attach (re)attaches n's container to the router with a fresh port handle.
func (n *node) attach(tp *topology) {
	tp.t.Helper()
	a, err := tp.router.AddPort(n.Port(), router.PortConfig{
		Network: n.network,
		PN:      netOf(n.network),
		Addr:    n.Addr(),
		MTU:     n.MTU(),
		Name:    n.Addr().String(),
	})
	if err != nil {
		tp.t.Fatalf("attach %v to network %d: %v", n.Addr(), n.network, err)
	}
	n.attached = a
}

// detach closes n's port on the router; the container keeps running.
func (n *node) detach() {
	if n.attached == nil {
		return
	}
	n.attached.Close()
	n.attached = nil
}

// waitStats polls the router's counters until cond holds or 5 s pass.
func (tp *topology) waitStats(what string, cond func(router.Stats) bool) router.Stats {
	tp.t.Helper()
	var s router.Stats
	poll.UntilNil(tp.t, 5*time.Second, what, func() error {
		if s = tp.router.Stats(); cond(s) {
			return nil
		}
		return fmt.Errorf("stats: %+v", s)
	})
	return s
}
