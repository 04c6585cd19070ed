package daemon

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/poll"
	"github.com/vrouter/vrouter/router/porttest"
	"github.com/vrouter/vrouter/stack/stacktest"
)

// startUpstream runs a DNS server on loopback that answers every A query
// with 127.0.0.9.
func startUpstream(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg).SetReply(r)
		m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: r.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: net.IPv4(127, 0, 0, 9)})
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// resolve sends a DNS query from the container behind p (address src) to
// the resolver through the router and returns the answer.
func resolve(t *testing.T, p *porttest.Port, src, name string) *mdns.Msg {
	t.Helper()
	q := new(mdns.Msg).SetQuestion(name, mdns.TypeA)
	b, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	from := netip.AddrPortFrom(netip.MustParseAddr(src), 5353)
	if err := p.Send(stacktest.UDPPacket(from, netip.MustParseAddrPort("169.254.20.10:53"), b)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		pkt, err := p.Recv(ctx)
		if err != nil {
			t.Fatalf("no answer to %s: %v", name, err)
		}
		ip := header.IPv4(pkt)
		if ip.Protocol() != uint8(header.UDPProtocolNumber) {
			continue
		}
		u := header.UDP(ip.Payload())
		if u.SourcePort() != 53 || ip.SourceAddress().String() != "169.254.20.10" {
			continue
		}
		r := new(mdns.Msg)
		if err := r.Unpack(u.Payload()); err != nil {
			t.Fatalf("answer to %s: %v", name, err)
		}
		if r.Id != q.Id {
			continue
		}
		return r
	}
}

func addrsOf(m *mdns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		if a, ok := rr.(*mdns.A); ok {
			out = append(out, a.A.String())
		}
	}
	slices.Sort(out)
	return out
}

// TestDNSThroughDaemon: the daemon gives a network a resolver when its
// first container attaches, answers private names from its records (and
// forwards the rest), follows detaches, and drops the network's stack with
// its last container.
func TestDNSThroughDaemon(t *testing.T) {
	up := startUpstream(t)
	td := startDaemonWith(t, func(c *Config) { c.DNSUpstreams = []netip.AddrPort{netip.MustParseAddrPort(up)} })
	web, err := td.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "web"})
	if err != nil {
		t.Fatal(err)
	}
	wrk, err := td.attach(t, control.AttachRequest{Network: testPN, App: testApp, Type: "worker"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := td.attach(t, control.AttachRequest{Network: testPN2, App: testApp, Type: "web"})
	if err != nil {
		t.Fatal(err)
	}
	ports := td.ports.all()
	pWeb, pWrk, pOther := ports[0], ports[1], ports[2]

	base := testApp + "." + testPN + ".private-network.internal."
	if r := resolve(t, pWrk, wrk.IP, "web."+base); r.Rcode != mdns.RcodeSuccess || !slices.Equal(addrsOf(r), []string{web.IP}) {
		t.Fatalf("web name from the worker: %v", r)
	}
	if r := resolve(t, pWeb, web.IP, "1.worker."+base); !slices.Equal(addrsOf(r), []string{wrk.IP}) || r.Answer[0].Header().Ttl != 30 {
		t.Fatalf("worker name from web: %v", r)
	}
	// The other network's container: the same app's names in testPN do not
	// exist for it.
	if r := resolve(t, pOther, other.IP, "web."+base); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("another network's name: %v", r)
	}
	if r := resolve(t, pWeb, web.IP, "example.test."); !slices.Equal(addrsOf(r), []string{"127.0.0.9"}) {
		t.Fatalf("forwarded name: %v", r)
	}

	if err := td.call(t, &control.Request{Op: "detach", Detach: &control.DetachRequest{ID: wrk.ID}}, false, nil); err != nil {
		t.Fatal(err)
	}
	if r := resolve(t, pWeb, web.IP, "worker."+base); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("detached worker still resolves: %v", r)
	}

	var names []control.Name
	if err := td.call(t, &control.Request{Op: "names", Names: &control.NamesRequest{App: testApp}}, false, &names); err != nil {
		t.Fatal(err)
	}
	// testPN: app, web, 1.web; testPN2: the same three.
	found := false
	for _, n := range names {
		if n.Name == base {
			found = n.Network == testPN && slices.Equal(n.Addresses, []string{web.IP})
		}
	}
	if len(names) != 6 || !found {
		t.Fatalf("names = %+v", names)
	}
	if err := td.call(t, &control.Request{Op: "names", Names: &control.NamesRequest{App: "ap-x"}}, false, &names); errCode(err) != "invalid" {
		t.Fatalf("names of a malformed app: %v", err)
	}

	// A port adds a batch's counters after forwarding it, so the answer to
	// the last query can reach the test before its to_stack is counted.
	poll.UntilNil(t, 5*time.Second, "status counts the queries", func() error {
		var st control.Status
		if err := td.call(t, &control.Request{Op: "status"}, false, &st); err != nil {
			t.Fatal(err)
		}
		if st.DNS == nil || st.DNS.Rcodes["NOERROR"] < 3 || st.DNS.Counters["forwarded"] != 1 || st.Counters["to_stack"] < 5 {
			return fmt.Errorf("status: dns %+v counters %v", st.DNS, st.Counters)
		}
		return nil
	})

	// The last containers leave: the stacks go with their networks.
	for _, id := range []string{web.ID, other.ID} {
		if err := td.call(t, &control.Request{Op: "detach", Detach: &control.DetachRequest{ID: id}}, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	td.mu.Lock()
	n := len(td.stacks)
	td.mu.Unlock()
	if n != 0 || td.router.Stats().Networks != 0 {
		t.Fatalf("%d stacks and %d router networks left after the last detach", n, td.router.Stats().Networks)
	}
}
