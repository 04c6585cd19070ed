package dns

import (
	"strings"

	mdns "github.com/miekg/dns"

	"github.com/vrouter/vrouter/internal/ids"
)

// Negative answers carry an SOA of the zone: TTL 30 like the records, and a
// minimum of 5 s so that a resolver caches "no such name" for 5 s only (a
// container attached a moment later must show up quickly; RFC 2308 takes
// the smaller of the two).
const (
	soaTTL     = TTL
	soaMinimum = 5
)

// answerPrivate answers a query for a name of Zone, for network h.pn:
//
//	Zone                      apex: SOA (and ANY) answer the SOA, other types NODATA
//	PN.Zone                   exists for h.pn only (empty non-terminal): NODATA
//	APP.PN.Zone               exists if app has containers in PN: A of its web ones
//	TYPE.APP.PN.Zone          exists if app has containers of TYPE: their A
//	N.TYPE.APP.PN.Zone        exists if container N of TYPE exists: its A
//
// Everything else, including every name of another network, is NXDOMAIN.
// The parse works on substrings of the query name and the answer is built
// in three allocations, whatever the number of records: this is the hot
// path of the resolver.
func (h *netHandler) answerPrivate(req *mdns.Msg) *mdns.Msg {
	q := req.Question[0]
	m := authoritative(req)
	name := strings.ToLower(q.Name) // no copy when already lower case
	rest, ok := cutZone(name, Zone)
	if !ok {
		// Only a name with escaped dots gets here (the mux and inZone
		// agree on labels; this string test does not): not ours to parse.
		return negative(m, mdns.RcodeNameError, Zone)
	}
	// labels[0] is PN, [1] APP, [2] TYPE, [3] N.
	var labels [4]string
	n := 0
	for rest != "" {
		if n == len(labels) {
			return negative(m, mdns.RcodeNameError, Zone)
		}
		i := strings.LastIndexByte(rest, '.')
		labels[n] = rest[i+1:]
		n++
		if i < 0 {
			break
		}
		rest = rest[:i]
		if rest == "" { // a leading dot: an empty label
			return negative(m, mdns.RcodeNameError, Zone)
		}
	}
	switch {
	case n == 0:
		if q.Qtype == mdns.TypeSOA || q.Qtype == mdns.TypeANY {
			m.Answer = []mdns.RR{soa(Zone)}
			return m
		}
		return negative(m, mdns.RcodeSuccess, Zone)
	case labels[0] != h.pn:
		// Another network's name, or a malformed one: the asker must not
		// be able to tell which.
		return negative(m, mdns.RcodeNameError, Zone)
	case n == 1:
		return negative(m, mdns.RcodeSuccess, Zone)
	}
	app := labels[1]
	if !ids.IsApp(app) {
		return negative(m, mdns.RcodeNameError, Zone)
	}
	recs := h.r.view.Containers(h.pn, app)
	if len(recs) == 0 {
		return negative(m, mdns.RcodeNameError, Zone)
	}
	typ, number := "web", 0
	if n >= 3 {
		typ = labels[2]
		if !ids.IsType(typ) {
			return negative(m, mdns.RcodeNameError, Zone)
		}
	}
	if n == 4 {
		if number, ok = parseNumber(labels[3]); !ok {
			return negative(m, mdns.RcodeNameError, Zone)
		}
	}
	count := 0
	for i := range recs {
		if matches(&recs[i], typ, number) {
			count++
		}
	}
	if count == 0 && n >= 3 {
		return negative(m, mdns.RcodeNameError, Zone)
	}
	if count == 0 || q.Qtype != mdns.TypeA && q.Qtype != mdns.TypeANY {
		return negative(m, mdns.RcodeSuccess, Zone)
	}
	m.Answer = h.records(q.Name, recs, typ, number, count)
	return m
}

// records builds the count A records of recs that match typ and number,
// rotated by one position per answer so that clients, which mostly take
// the first record, spread over the containers.
func (h *netHandler) records(owner string, recs []Record, typ string, number, count int) []mdns.RR {
	// One allocation holds the records and their addresses, one more the
	// slice of interfaces (none more for the common single record).
	var as []aRecord
	var rrs []mdns.RR
	if count == 1 {
		one := new(oneA)
		as, rrs = one.a[:], one.rr[:]
	} else {
		as, rrs = make([]aRecord, count), make([]mdns.RR, count)
	}
	start := int(h.r.rotor.Add(1) % uint32(count))
	j := 0
	for i := range recs {
		rec := &recs[i]
		if !matches(rec, typ, number) {
			continue
		}
		k := (j - start + count) % count
		j++
		x := &as[k]
		x.ip = rec.Addr.Unmap().As4()
		x.A = mdns.A{
			Hdr: mdns.RR_Header{Name: owner, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: TTL},
			A:   x.ip[:],
		}
		rrs[k] = &x.A
	}
	return rrs
}

// aRecord is an A record with the storage of its address.
type aRecord struct {
	mdns.A
	ip [4]byte
}

// oneA is the answer of a single A record in one allocation.
type oneA struct {
	a  [1]aRecord
	rr [1]mdns.RR
}

// matches reports whether rec is answered for a name of type typ and, when
// number > 0, that number. Records without an IPv4 address are skipped:
// only A records exist here.
func matches(rec *Record, typ string, number int) bool {
	return rec.Type == typ && (number == 0 || rec.Number == number) && rec.Addr.Unmap().Is4()
}

// answerReverse answers the reverse zone of the private range: no PTR
// exists there, so every name below the zone is NXDOMAIN, and the zone
// itself exists (SOA answers the SOA, other types are NODATA).
func answerReverse(req *mdns.Msg) *mdns.Msg {
	q := req.Question[0]
	m := authoritative(req)
	if !strings.EqualFold(q.Name, reverseZone) {
		return negative(m, mdns.RcodeNameError, reverseZone)
	}
	if q.Qtype == mdns.TypeSOA || q.Qtype == mdns.TypeANY {
		m.Answer = []mdns.RR{soa(reverseZone)}
		return m
	}
	return negative(m, mdns.RcodeSuccess, reverseZone)
}

// authoritative starts the answer of a query of our own zones. The question
// is shared with the request, which is never modified after it is read.
func authoritative(req *mdns.Msg) *mdns.Msg {
	m := new(mdns.Msg)
	m.Id = req.Id
	m.Response = true
	m.Opcode = mdns.OpcodeQuery
	m.Authoritative = true
	m.RecursionDesired = req.RecursionDesired
	m.CheckingDisabled = req.CheckingDisabled
	m.Question = req.Question[:1:1]
	return m
}

// negative turns m into NXDOMAIN or NODATA (rcode NOERROR, no answer) with
// the SOA of zone in the authority section.
func negative(m *mdns.Msg, rcode int, zone string) *mdns.Msg {
	m.Rcode = rcode
	m.Answer = nil
	m.Ns = []mdns.RR{soa(zone)}
	return m
}

// soa returns a fresh SOA of zone (never shared: packing writes into the
// header of an RR).
func soa(zone string) *mdns.SOA {
	return &mdns.SOA{
		Hdr:     mdns.RR_Header{Name: zone, Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: soaTTL},
		Ns:      "ns." + Zone,
		Mbox:    "hostmaster." + Zone,
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  soaMinimum,
	}
}

// cutZone returns the labels of lname (lower case, FQDN) before zone,
// without the dot that separates them: "" for the zone itself. ok is false
// when lname is not zone nor below it, or when the dot before zone is
// escaped (then it is part of a label, not a separator).
func cutZone(lname, zone string) (rest string, ok bool) {
	if lname == zone {
		return "", true
	}
	if len(lname) <= len(zone) || !strings.HasSuffix(lname, zone) {
		return "", false
	}
	dot := len(lname) - len(zone) - 1
	if lname[dot] != '.' || escaped(lname, dot) {
		return "", false
	}
	return lname[:dot], true
}

// inZone reports whether name (any case, FQDN) is zone or below it.
func inZone(name, zone string) bool {
	if len(name) < len(zone) || !strings.EqualFold(name[len(name)-len(zone):], zone) {
		return false
	}
	if len(name) == len(zone) {
		return true
	}
	dot := len(name) - len(zone) - 1
	return name[dot] == '.' && !escaped(name, dot)
}

// escaped reports whether the byte at i of a presentation-format name is
// escaped, i.e. preceded by an odd number of backslashes.
func escaped(s string, i int) bool {
	n := 0
	for i--; i >= 0 && s[i] == '\\'; i-- {
		n++
	}
	return n%2 == 1
}

// parseNumber parses a container number: decimal, ≥ 1, no leading zero,
// at most 9 digits (no overflow).
func parseNumber(s string) (int, bool) {
	if s == "" || len(s) > 9 || s[0] == '0' {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
