package dns

import (
	"net"

	mdns "github.com/miekg/dns"
)

// EDNS0 sizes: what a UDP response may use is the client's advertised size
// clamped to [minUDPSize, maxUDPSize]; maxUDPSize is also what our OPT
// advertises and what forwarded queries advertise upstream.
const (
	minUDPSize = mdns.MinMsgSize // 512
	maxUDPSize = 4096
)

// reverseZone holds the reverse names of the private range
// (10.240.0.0/22). It is answered locally so that container addresses never
// leak to the upstream resolvers.
const reverseZone = "240.10.in-addr.arpa."

// netHandler serves the queries of one private network.
type netHandler struct {
	r    *Resolver
	pn   string // lower-case network id
	mux  *mdns.ServeMux
	rate *netRate // pn's use of the resolver's query rate
}

var _ mdns.Handler = (*netHandler)(nil)

func newNetHandler(r *Resolver, pn string) *netHandler {
	h := &netHandler{r: r, pn: pn, mux: mdns.NewServeMux(), rate: r.gate.network(pn)}
	h.mux.HandleFunc(Zone, h.serveLocal)
	h.mux.HandleFunc(reverseZone, h.serveReverse)
	h.mux.HandleFunc(".", h.serveForward)
	return h
}

// ServeDNS implements mdns.Handler. It checks what the miekg server's
// accept function may already have checked, because it must be correct
// when called directly too, then dispatches by zone.
func (h *netHandler) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	h.serve(w, req, true)
}

// ServeDNSNow is ServeDNS for a caller that must not block (the stack
// answers UDP queries on the goroutine that reads the container's
// packets): it answers req and returns true when no upstream exchange is
// needed (private and reverse names, refusals, cache hits); otherwise it
// writes nothing, leaves req as it was, and returns false, and the caller
// hands req to ServeDNS where blocking is fine. Both give the same answer.
func (h *netHandler) ServeDNSNow(w mdns.ResponseWriter, req *mdns.Msg) bool {
	return h.serve(w, req, false)
}

// AdmitQuery says whether the next query of this network is to be
// served, dropped or refused (fair.go). The stack asks before it unpacks
// the query, so that a refusal costs as little as possible; every refusal
// is counted here.
func (h *netHandler) AdmitQuery() Admission {
	a := h.r.gate.admit(h.rate, h.r.now())
	switch a {
	case Drop:
		h.r.stats.rateDropped.Add(1)
	case Refuse:
		h.r.stats.rateRefused.Add(1)
		h.r.stats.rcode(mdns.RcodeRefused)
	}
	return a
}

// serve answers req; with block false it returns false, having written
// nothing, instead of exchanging with an upstream.
func (h *netHandler) serve(w mdns.ResponseWriter, req *mdns.Msg, block bool) bool {
	if req.Response {
		// Answering a response invites reflection loops: drop it.
		return true
	}
	if h.r.closed.Load() {
		h.finish(w, req, new(mdns.Msg).SetRcode(req, mdns.RcodeServerFailure))
		return true
	}
	if req.Opcode != mdns.OpcodeQuery {
		h.finish(w, req, new(mdns.Msg).SetRcode(req, mdns.RcodeNotImplemented))
		return true
	}
	if len(req.Question) != 1 || !mdns.IsFqdn(req.Question[0].Name) {
		h.finish(w, req, new(mdns.Msg).SetRcodeFormatError(req))
		return true
	}
	if opt := req.IsEdns0(); opt != nil && opt.Version() != 0 {
		h.finish(w, req, new(mdns.Msg).SetRcode(req, mdns.RcodeBadVers))
		return true
	}
	q := req.Question[0]
	if q.Qclass != mdns.ClassINET {
		h.finish(w, req, new(mdns.Msg).SetRcode(req, mdns.RcodeRefused))
		return true
	}
	if q.Qtype == mdns.TypeAXFR || q.Qtype == mdns.TypeIXFR {
		// Zone transfers are never served nor relayed (a transfer is a
		// stream of messages; the forwarder reads one).
		h.finish(w, req, new(mdns.Msg).SetRcode(req, mdns.RcodeRefused))
		return true
	}
	if !block && !inZone(q.Name, Zone) && !inZone(q.Name, reverseZone) {
		// Where the mux and serveForward would forward it: only what
		// needs no upstream is answered here.
		m, ok := h.r.forwardNow(req)
		if !ok {
			return false
		}
		h.finish(w, req, m)
		return true
	}
	h.mux.ServeDNS(w, req)
	return true
}

// serveForward is the mux's catch-all. The mux sends DS queries to "."
// even for names of our zones (it looks for a parent zone), so the zone is
// checked again here: a private name must never reach an upstream.
func (h *netHandler) serveForward(w mdns.ResponseWriter, req *mdns.Msg) {
	name := req.Question[0].Name
	switch {
	case inZone(name, Zone):
		h.serveLocal(w, req)
	case inZone(name, reverseZone):
		h.serveReverse(w, req)
	default:
		h.r.forward(h.pn, h.rate, w, req, func(m *mdns.Msg) { h.finish(w, req, m) })
	}
}

func (h *netHandler) serveLocal(w mdns.ResponseWriter, req *mdns.Msg) {
	h.r.stats.local.Add(1)
	h.finish(w, req, h.answerPrivate(req))
}

func (h *netHandler) serveReverse(w mdns.ResponseWriter, req *mdns.Msg) {
	h.r.stats.local.Add(1)
	h.finish(w, req, answerReverse(req))
}

// finish fits m to the client and sends it: RA set, an OPT if the request
// had one (echoing DO), truncated to the client's UDP size (TC set when
// records were dropped), counted by rcode.
func (h *netHandler) finish(w mdns.ResponseWriter, req, m *mdns.Msg) {
	m.RecursionAvailable = true
	size := minUDPSize
	if opt := req.IsEdns0(); opt != nil {
		size = min(max(int(opt.UDPSize()), minUDPSize), maxUDPSize)
		m.SetEdns0(maxUDPSize, opt.Do())
	} else if m.Rcode > 0xF {
		// An extended rcode needs an OPT, which this client cannot read.
		m.Rcode = mdns.RcodeServerFailure
	}
	if _, isTCP := w.RemoteAddr().(*net.TCPAddr); isTCP {
		size = mdns.MaxMsgSize
	}
	n := len(m.Answer) + len(m.Ns) + len(m.Extra)
	m.Truncate(size)
	if len(m.Answer)+len(m.Ns)+len(m.Extra) < n {
		h.r.stats.truncated.Add(1)
	}
	h.r.stats.rcode(m.Rcode)
	if err := w.WriteMsg(m); err != nil {
		h.r.log.Debug("dns: write response", "network", h.pn, "client", w.RemoteAddr(), "err", err)
	}
}
