package router_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/router/porttest"
)

// newTestRouter returns a router closed at the end of the test, after
// which no goroutine of it may remain.
func newTestRouter(t *testing.T) *router.Router {
	t.Helper()
	leaktest.Check(t)
	r := router.New(router.Config{Logger: router.NewTestLogger(t)})
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Router.Close: %v", err)
		}
	})
	return r
}

// addPort attaches an in-memory port (batch 8, MTU 1390; it accepts
// packets up to 1500 bytes from the test).
func addPort(t *testing.T, r *router.Router, network uint32, addr string) (*router.Attached, *porttest.Port) {
	t.Helper()
	p := porttest.New(8, 1500)
	a, err := r.AddPort(p, router.PortConfig{Network: network, PN: pnOf(network), Addr: netip.MustParseAddr(addr), MTU: 1390, Name: addr})
	if err != nil {
		t.Fatalf("AddPort(%d, %s): %v", network, addr, err)
	}
	return a, p
}

func send(t *testing.T, p *porttest.Port, pkt []byte) {
	t.Helper()
	if err := p.Send(pkt); err != nil {
		t.Fatalf("Send: %v", err)
	}
}

func recv(t *testing.T, p *porttest.Port) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := p.Recv(ctx)
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	return b
}

// expectEmpty checks that nothing is queued towards the container. Call it
// after WaitAccounted: by then every Write of the router has happened.
func expectEmpty(t *testing.T, p *porttest.Port, name string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if b, err := p.Recv(ctx); err == nil {
		t.Errorf("%s received an unexpected packet: % x", name, b)
	}
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// pnOf is the network id tests give the table of VNI vni.
func pnOf(vni uint32) string { return fmt.Sprintf("pn-%d", vni) }
