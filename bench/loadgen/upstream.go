package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

// Upstream is a DNS server on loopback that answers every A query with one
// fixed address: the upstream resolver of the daemons under test, so that
// no bench traffic ever reaches a real resolver. It serves UDP and TCP on
// the same port.
type Upstream struct {
	addr    string
	answer  netip.Addr
	ttl     uint32
	queries atomic.Uint64
	udp     *mdns.Server
	tcp     *mdns.Server
	wg      sync.WaitGroup
}

// StartUpstream listens on 127.0.0.1 (a free port) and answers A queries
// with answer and the given TTL; other types get NOERROR without answer.
func StartUpstream(answer netip.Addr, ttl uint32) (*Upstream, error) {
	pc, ln, err := listenBoth()
	if err != nil {
		return nil, err
	}
	u := &Upstream{addr: pc.LocalAddr().String(), answer: answer, ttl: ttl}
	mux := mdns.NewServeMux()
	mux.HandleFunc(".", u.serve)
	u.udp = &mdns.Server{PacketConn: pc, Handler: mux}
	u.tcp = &mdns.Server{Listener: ln, Handler: mux}
	started := make(chan struct{}, 2)
	for _, s := range []*mdns.Server{u.udp, u.tcp} {
		s.NotifyStartedFunc = func() { started <- struct{}{} }
		u.wg.Go(func() { _ = s.ActivateAndServe() })
	}
	timeout := time.After(5 * time.Second)
	for range 2 {
		select {
		case <-started:
		case <-timeout:
			u.Close()
			return nil, errors.New("upstream: servers did not start")
		}
	}
	return u, nil
}

// Addr is IP:PORT, for --dns-upstream.
func (u *Upstream) Addr() string { return u.addr }

// Queries is the number of queries answered so far.
func (u *Upstream) Queries() uint64 { return u.queries.Load() }

func (u *Upstream) serve(w mdns.ResponseWriter, r *mdns.Msg) {
	u.queries.Add(1)
	m := new(mdns.Msg)
	m.SetReply(r)
	if len(r.Question) == 1 && r.Question[0].Qtype == mdns.TypeA {
		m.Answer = append(m.Answer, &mdns.A{
			Hdr: mdns.RR_Header{Name: r.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: u.ttl},
			A:   u.answer.AsSlice(),
		})
	}
	_ = w.WriteMsg(m)
}

// Close stops both servers and waits for them.
func (u *Upstream) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := errors.Join(u.udp.ShutdownContext(ctx), u.tcp.ShutdownContext(ctx))
	u.wg.Wait()
	return err
}

// listenBoth finds a port on 127.0.0.1 that is free for UDP and TCP: a UDP
// port the kernel picks may be taken for TCP, so it tries a few.
func listenBoth() (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, fmt.Errorf("upstream: %w", err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		lastErr = err
	}
	return nil, nil, fmt.Errorf("upstream: no port free for both UDP and TCP: %w", lastErr)
}
