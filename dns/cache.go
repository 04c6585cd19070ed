package dns

import (
	"container/list"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// Cache policy: an LRU of at most max replies, each valid for the smallest
// TTL of its answer and authority records (capped at maxCacheTTL), served
// with TTLs decremented by its age. Replies longer than maxCachedLen are
// not kept, so the cache holds at most max × maxCachedLen bytes of DNS
// data whatever clients ask.
const (
	maxCacheTTL  = 3600 // seconds
	maxCachedLen = maxUDPSize
)

// cacheKey identifies a forwarded question; DO changes what upstreams
// return (DNSSEC records), so it is part of the key.
type cacheKey struct {
	name   string // lower case
	qtype  uint16
	qclass uint16
	do     bool
}

func keyOf(req *mdns.Msg) cacheKey {
	q := req.Question[0]
	k := cacheKey{name: strings.ToLower(q.Name), qtype: q.Qtype, qclass: q.Qclass}
	if opt := req.IsEdns0(); opt != nil {
		k.do = opt.Do()
	}
	return k
}

type cacheEntry struct {
	key    cacheKey
	msg    *mdns.Msg // read-only: every hit copies it
	stored time.Time
	ttl    time.Duration
}

type cache struct {
	max int

	mu    sync.Mutex
	order *list.List // of *cacheEntry, most recently used first
	byKey map[cacheKey]*list.Element
}

func newCache(max int) *cache {
	return &cache{max: max, order: list.New(), byKey: make(map[cacheKey]*list.Element)}
}

// get returns a copy of the reply cached for key with its TTLs decremented
// by its age at now, or nil if there is none or it has expired.
func (c *cache) get(key cacheKey, now time.Time) *mdns.Msg {
	c.mu.Lock()
	el, ok := c.byKey[key]
	if !ok {
		c.mu.Unlock()
		return nil
	}
	e := el.Value.(*cacheEntry)
	age := max(now.Sub(e.stored), 0) // a clock stepped back does not extend validity
	if age >= e.ttl {
		c.remove(el)
		c.mu.Unlock()
		return nil
	}
	c.order.MoveToFront(el)
	c.mu.Unlock()

	m := e.msg.Copy()
	ageTTLs(m, uint32(age/time.Second))
	return m
}

// put stores msg (which the caller no longer modifies) for ttl seconds.
func (c *cache) put(key cacheKey, msg *mdns.Msg, ttl uint32, now time.Time) {
	if msg.Len() > maxCachedLen {
		return
	}
	e := &cacheEntry{key: key, msg: msg, stored: now, ttl: time.Duration(ttl) * time.Second}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[key]; ok {
		el.Value = e
		c.order.MoveToFront(el)
		return
	}
	c.byKey[key] = c.order.PushFront(e)
	for c.order.Len() > c.max {
		c.remove(c.order.Back())
	}
}

// remove drops el; c.mu is held.
func (c *cache) remove(el *list.Element) {
	delete(c.byKey, el.Value.(*cacheEntry).key)
	c.order.Remove(el)
}

// cacheTTL says whether m may be cached and for how long: NOERROR and
// NXDOMAIN only, not truncated, for the smallest TTL of its answer and
// authority records (for a negative answer the SOA counts with
// min(TTL, minimum), RFC 2308), capped at maxCacheTTL. No TTL (no record)
// or TTL 0 means no caching.
func cacheTTL(m *mdns.Msg) (uint32, bool) {
	if m.Truncated || m.Rcode != mdns.RcodeSuccess && m.Rcode != mdns.RcodeNameError {
		return 0, false
	}
	neg := isNegative(m)
	ttl, found := uint32(maxCacheTTL), false
	for _, sec := range [2][]mdns.RR{m.Answer, m.Ns} {
		for _, rr := range sec {
			t := rr.Header().Ttl
			if s, ok := rr.(*mdns.SOA); ok && neg {
				t = min(t, s.Minttl)
			}
			ttl, found = min(ttl, t), true
		}
	}
	if !found || ttl == 0 {
		return 0, false
	}
	return ttl, true
}

// ageTTLs decrements every TTL of m by age seconds (never below 0).
func ageTTLs(m *mdns.Msg, age uint32) {
	for _, sec := range [3][]mdns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			h := rr.Header()
			if h.Rrtype == mdns.TypeOPT {
				continue
			}
			h.Ttl -= min(h.Ttl, age)
		}
	}
}
