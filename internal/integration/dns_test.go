package integration

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/vrouter/vrouter/dns"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/stack"
)

// staticView is a fixed set of container records.
type staticView map[string][]dns.Record // "pn/app" → records

func (v staticView) Containers(pn, app string) []dns.Record { return v[pn+"/"+app] }

const (
	dnsPN1 = "pn-ad0fd6a1-d05e-40ea-bf63-c4f8a75a9d8c"
	dnsPN2 = "pn-0b7e3c52-9a41-4d6e-8f10-2c3d4e5f6a7b"
	dnsApp = "ap-a71da13f-7c70-4c00-a644-eee8558d8053"
)

// withResolver gives network (VNI vni, id pn) a netstack serving res, as
// the daemon does.
func (tp *topology) withResolver(vni uint32, pn string, res *dns.Resolver) {
	tp.t.Helper()
	rt := tp.router
	st, err := stack.New(stack.Config{
		Name: pn, Addr: resolver, MTU: router.DefaultMTU, Headroom: router.Headroom,
		Output: func(bufs [][]byte, off int) { rt.WriteLocal(vni, bufs, off) },
		DNS:    res.Handler(pn),
	})
	if err != nil {
		tp.t.Fatal(err)
	}
	if err := rt.SetLocal(vni, netOf(vni), st, router.LocalOptions{}); err != nil {
		tp.t.Fatal(err)
	}
	tp.t.Cleanup(func() {
		rt.SetLocal(vni, netOf(vni), nil, router.LocalOptions{})
		if err := st.Close(); err != nil {
			tp.t.Errorf("stack close: %v", err)
		}
	})
}

// startFakeUpstream answers every A query with 127.0.0.8 on loopback UDP.
func startFakeUpstream(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg).SetReply(r)
		m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: r.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: net.IPv4(127, 0, 0, 8)})
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

func exchange(t *testing.T, conn net.Conn, name string, qtype uint16) *mdns.Msg {
	t.Helper()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	dc := &mdns.Conn{Conn: conn}
	q := new(mdns.Msg).SetQuestion(name, qtype)
	if err := dc.WriteMsg(q); err != nil {
		t.Fatal(err)
	}
	r, err := dc.ReadMsg()
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	if r.Id != q.Id {
		t.Fatalf("reply id %d to query %d", r.Id, q.Id)
	}
	return r
}

func answerAddrs(m *mdns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		if a, ok := rr.(*mdns.A); ok {
			out = append(out, a.A.String())
		}
	}
	slices.Sort(out)
	return out
}

// TestDNSOverRouter: gVisor containers resolve private names through the
// router and a network's netstack, over UDP and TCP; two networks with the
// same addresses each see only their own names; other names go to a fake
// upstream on loopback.
func TestDNSOverRouter(t *testing.T) {
	tp := newTopology(t)
	up := startFakeUpstream(t)
	view := staticView{
		dnsPN1 + "/" + dnsApp: {
			{Type: "web", Number: 1, Addr: netip.MustParseAddr("10.240.0.1")},
			{Type: "web", Number: 2, Addr: netip.MustParseAddr("10.240.0.2")},
		},
		dnsPN2 + "/" + dnsApp: {{Type: "web", Number: 1, Addr: netip.MustParseAddr("10.240.0.1")}},
	}
	res, err := dns.New(dns.Config{View: view, Upstreams: []string{up}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Close() })
	tp.withResolver(1, dnsPN1, res)
	tp.withResolver(2, dnsPN2, res)
	a := tp.add(1, "10.240.0.1")
	tp.add(1, "10.240.0.2")
	b := tp.add(2, "10.240.0.1") // same address, other network

	srv := netip.AddrPortFrom(resolver, 53)
	name1 := "web." + dnsApp + "." + dnsPN1 + ".private-network.internal."
	uc, err := a.DialUDP(srv)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	if r := exchange(t, uc, name1, mdns.TypeA); !slices.Equal(answerAddrs(r), []string{"10.240.0.1", "10.240.0.2"}) {
		t.Fatalf("UDP answer %v", r)
	}
	if r := exchange(t, uc, "example.test.", mdns.TypeA); !slices.Equal(answerAddrs(r), []string{"127.0.0.8"}) {
		t.Fatalf("forwarded answer %v", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tc, err := a.DialTCP(ctx, srv)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if r := exchange(t, tc, "1."+name1, mdns.TypeA); !slices.Equal(answerAddrs(r), []string{"10.240.0.1"}) {
		t.Fatalf("TCP answer %v", r)
	}

	// The container of network 2 with the same address: network 1's names
	// do not exist, its own do.
	ub, err := b.DialUDP(srv)
	if err != nil {
		t.Fatal(err)
	}
	defer ub.Close()
	if r := exchange(t, ub, name1, mdns.TypeA); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("network 2 asking network 1's name: %v", r)
	}
	name2 := "web." + dnsApp + "." + dnsPN2 + ".private-network.internal."
	if r := exchange(t, ub, name2, mdns.TypeA); !slices.Equal(answerAddrs(r), []string{"10.240.0.1"}) {
		t.Fatalf("network 2's own name: %v", r)
	}
	if s := tp.router.Stats(); s.Counters["to_stack"] == 0 || s.Counters["from_stack"] == 0 || s.Counters["from_stack_dropped"] != 0 {
		t.Fatalf("router counters %v", s.Counters)
	}
}
