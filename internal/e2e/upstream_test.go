//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"strings"
	"sync"

	mdns "github.com/miekg/dns"
)

// upstreamZone is what the fake upstream resolver answers; every daemon of
// the tier forwards to it (--dns-upstream), so no test ever reaches a real
// resolver.
const upstreamZone = "upstream.test."

// bigRecords is the answer size of big.upstream.test.: larger than the
// daemon's 4096-byte EDNS0 buffer, so the daemon must retry over TCP, and
// then truncate for the container, which retries over TCP in turn.
const bigRecords = 300

// fakeUpstream serves upstreamZone on 127.0.0.1, UDP and TCP, same port:
//
//	hello.upstream.test.  A 127.0.0.7, TTL 60
//	big.upstream.test.    bigRecords A records 127.0.x.y
//	anything else         NXDOMAIN
type fakeUpstream struct {
	addr    string
	servers []*mdns.Server
	mu      sync.Mutex
	queries map[string]int // by lower-case name and transport ("name/udp")
}

func startUpstream() (*fakeUpstream, error) {
	u := &fakeUpstream{queries: make(map[string]int)}
	for range 10 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			continue // the port is taken for TCP: try another
		}
		u.addr = pc.LocalAddr().String()
		u.servers = []*mdns.Server{
			{PacketConn: pc, Handler: u, UDPSize: mdns.MaxMsgSize},
			{Listener: ln, Handler: u},
		}
		for _, s := range u.servers {
			started := make(chan struct{})
			s.NotifyStartedFunc = func() { close(started) }
			go s.ActivateAndServe()
			<-started
		}
		return u, nil
	}
	return nil, fmt.Errorf("no free loopback port for UDP and TCP")
}

func (u *fakeUpstream) ServeDNS(w mdns.ResponseWriter, r *mdns.Msg) {
	m := new(mdns.Msg).SetReply(r)
	m.RecursionAvailable = true
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	_, tcp := w.RemoteAddr().(*net.TCPAddr)
	transport := "udp"
	if tcp {
		transport = "tcp"
	}
	u.mu.Lock()
	u.queries[name+"/"+transport]++
	u.mu.Unlock()
	a := func(ip string, ttl uint32) mdns.RR {
		return &mdns.A{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: ttl}, A: net.ParseIP(ip)}
	}
	switch {
	case name == "hello."+upstreamZone && q.Qtype == mdns.TypeA:
		m.Answer = append(m.Answer, a("127.0.0.7", 60))
	case name == "big."+upstreamZone && q.Qtype == mdns.TypeA:
		for i := range bigRecords {
			m.Answer = append(m.Answer, a(fmt.Sprintf("127.0.%d.%d", 1+i/250, 1+i%250), 60))
		}
	case name == "hello."+upstreamZone || name == "big."+upstreamZone:
	default:
		m.Rcode = mdns.RcodeNameError
	}
	if !tcp {
		size := mdns.MinMsgSize
		if opt := r.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

func (u *fakeUpstream) count(name, transport string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.queries[strings.ToLower(name)+"/"+transport]
}

func (u *fakeUpstream) close() {
	for _, s := range u.servers {
		s.Shutdown()
	}
}
