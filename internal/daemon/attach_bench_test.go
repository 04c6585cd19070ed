package daemon

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/vrouter/vrouter/internal/control"
)

// attachDirect attaches a fake port through the daemon's attach path
// (without the control socket), as `vrouter attach --fd` would.
func attachDirect(tb testing.TB, d *Daemon, req control.AttachRequest) control.Container {
	tb.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	w.Close()
	res, err := d.attach(context.Background(), &req, r)
	if err != nil {
		tb.Fatalf("attach: %v", err)
	}
	return res.(control.Container)
}

// BenchmarkAttach measures one attach and its detach with ports containers
// already attached in the same network: the per-attach cost that bench
// scenario 8 sees grow while it fills a network. The daemon's reconcile
// loop runs meanwhile, as in production; its allocations count.
func BenchmarkAttach(b *testing.B) {
	for _, n := range []int{1, 100, 500, 1000} {
		b.Run(fmt.Sprintf("ports=%d", n), func(b *testing.B) {
			td := startDaemonOpts(b, func(*Config) {}, false)
			for i := range n {
				attachDirect(b, td.Daemon, control.AttachRequest{Network: testPN, App: testApp, Type: "worker", ContainerKey: fmt.Sprint("k", i)})
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				c := attachDirect(b, td.Daemon, control.AttachRequest{Network: testPN, App: testApp, Type: "web", ContainerKey: "bench"})
				if _, err := td.detach(c.ID); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFillNetwork attaches the 1022 containers of one network to an
// empty daemon: the sequence of bench scenario 8 and TestNetworkFull. Run
// it with -benchtime=1x (each iteration's daemon lives until the end).
func BenchmarkFillNetwork(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		td := startDaemonOpts(b, func(*Config) {}, false)
		b.StartTimer()
		for i := range 1022 {
			attachDirect(b, td.Daemon, control.AttachRequest{Network: testPN, App: testApp, Type: "worker", ContainerKey: fmt.Sprint("k", i)})
		}
	}
}
