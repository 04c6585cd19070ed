// Package dns is the resolver every private network's netstack serves on
// the resolver address: it answers the names of the containers of that
// network from a read-only View of the cluster's records, answers the
// reverse zone of the private range locally, and forwards every other name
// to upstream resolvers through a bounded cache.
//
// Pipeline of one query (Handler(pn).ServeDNS, on a goroutine of the
// miekg server that read it):
//
//	check (opcode, question count, class, EDNS version)
//	  → ServeMux: private zone | reverse zone → answer from the View
//	              anything else              → cache → singleflight → upstreams
//	  → finish: EDNS0 echo, truncation to the client's size, counters, write
//
// Forwarded queries of ServeDNS run on the server's goroutine; the
// in-flight bounds cap how many of them a client (and all clients) can
// keep blocked, and Close cancels them and waits until every one has
// returned. Those of ServeDNSAsync (async.go) wait on sockets shared per
// upstream, whose reader goroutines (and a sweeper) the resolver starts on
// first use and Close stops.
package dns

import (
	"context"
	"errors"
	"fmt"
	"github.com/vrouter/vrouter/internal/hist"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/vrouter/vrouter/internal/ids"
)

// Zone is the zone of the private names.
const Zone = ids.Zone

// TTL is the TTL of every private A record, in seconds.
const TTL = 30

// Defaults of Config.
const (
	DefaultTimeout              = 2 * time.Second
	DefaultCacheSize            = 10000
	DefaultMaxInflight          = 256
	DefaultMaxInflightPerClient = 32
)

// Record is one container as DNS sees it.
type Record struct {
	Type   string
	Number int
	Addr   netip.Addr
}

// View is the read-only view of the container records of the cluster. The
// daemon implements it from the replicated store (live containers only:
// records of dead nodes are already gone). Safe for concurrent use, cheap
// (called per query); the caller does not modify the returned slice.
type View interface {
	// Containers returns the containers of app in network pn, any order.
	Containers(pn, app string) []Record
}

// Config configures a Resolver.
type Config struct {
	View                 View             // required
	Upstreams            []string         // "ADDR:PORT" (IPv4 or [IPv6]); empty: forwarded names get SERVFAIL
	Timeout              time.Duration    // per forwarded query, all upstreams; 0 = 2s
	CacheSize            int              // 0 = 10000; negative disables the cache
	MaxInflight          int              // 0 = 256
	MaxInflightPerClient int              // 0 = 32
	QueryRate            int              // queries/s the networks share when several ask at once (fair.go); 0 = 20000, negative: no limit
	Logger               *slog.Logger     // nil = discard
	Now                  func() time.Time // nil = time.Now (tests use a fake clock for cache expiry)
}

// Resolver answers the queries of every private network of the node. One
// Resolver serves all networks; Handler gives each network its own handler.
type Resolver struct {
	view      View
	upstreams []string
	pools     []*udpPool     // UDP sockets of upstreams[i]
	async     *asyncUpstream // shared sockets of upstreams[0]; nil without upstreams
	timeout   time.Duration
	maxTotal  int
	maxClient int
	log       *slog.Logger
	now       func() time.Time
	cache     *cache // nil when disabled
	gate      *rateGate

	// ctx is the parent of every forwarded query; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	// closed is read on every query without a lock; it is set under mu.
	// Every forwarded query checks it and registers in wg under mu, so
	// Close (set under mu, then wait on wg) never races with a late Add.
	closed atomic.Bool

	// mu guards the bookkeeping of forwarded queries.
	mu         sync.Mutex
	wg         sync.WaitGroup
	flights    map[cacheKey]*flight // forwards in progress, by cache key
	clients    map[clientKey]int    // forwarded queries in progress per client
	exchanges  int                  // flights in progress (each holds upstream exchanges)
	netFlights map[string]int       // flights in progress per network that started them

	rotor atomic.Uint32 // rotates the order of private A records
	stats counters
}

// New validates cfg and returns a Resolver. It starts nothing.
func New(cfg Config) (*Resolver, error) {
	if cfg.View == nil {
		return nil, errors.New("dns: config without View")
	}
	if cfg.Timeout < 0 || cfg.MaxInflight < 0 || cfg.MaxInflightPerClient < 0 {
		return nil, fmt.Errorf("dns: negative timeout or in-flight bound (%v, %d, %d)",
			cfg.Timeout, cfg.MaxInflight, cfg.MaxInflightPerClient)
	}
	ups := make([]string, 0, len(cfg.Upstreams))
	for _, u := range cfg.Upstreams {
		ap, err := netip.ParseAddrPort(u)
		if err != nil {
			return nil, fmt.Errorf("dns: upstream %q: want ADDR:PORT: %w", u, err)
		}
		if ap.Port() == 0 {
			return nil, fmt.Errorf("dns: upstream %q: port 0", u)
		}
		ups = append(ups, ap.String())
	}
	r := &Resolver{
		view:       cfg.View,
		upstreams:  ups,
		timeout:    orDefault(cfg.Timeout, DefaultTimeout),
		maxTotal:   orDefault(cfg.MaxInflight, DefaultMaxInflight),
		maxClient:  orDefault(cfg.MaxInflightPerClient, DefaultMaxInflightPerClient),
		log:        cfg.Logger,
		now:        cfg.Now,
		flights:    make(map[cacheKey]*flight),
		clients:    make(map[clientKey]int),
		netFlights: make(map[string]int),
	}
	r.stats.upstream = hist.New(upstreamBuckets...)
	r.gate = newRateGate(max(orDefault(cfg.QueryRate, DefaultQueryRate), 0))
	if r.log == nil {
		r.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if r.now == nil {
		r.now = time.Now
	}
	for _, u := range ups {
		r.pools = append(r.pools, newUDPPool(u, r.now))
	}
	if len(ups) > 0 {
		r.async = newAsyncUpstream(r)
	}
	switch {
	case cfg.CacheSize == 0:
		r.cache = newCache(DefaultCacheSize)
	case cfg.CacheSize > 0:
		r.cache = newCache(cfg.CacheSize)
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r, nil
}

func orDefault[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// Handler returns the handler of network pn: it answers the private names
// of pn only (a name of another network is NXDOMAIN, like a name that does
// not exist) and forwards the rest. Each handler has its own ServeMux.
func (r *Resolver) Handler(pn string) mdns.Handler {
	return newNetHandler(r, strings.ToLower(pn))
}

// Close cancels the forwarded queries in flight and waits until each has
// answered SERVFAIL and returned. Every later query gets SERVFAIL.
// Close is idempotent; a concurrent second Close waits as well.
func (r *Resolver) Close() error {
	r.mu.Lock()
	r.closed.Store(true)
	r.mu.Unlock()
	r.cancel()
	if r.async != nil {
		r.async.close()
	}
	r.wg.Wait()
	for _, p := range r.pools {
		p.close()
	}
	return nil
}

// UpstreamsFromResolvConf returns "ADDR:53" for each nameserver of a
// resolv.conf, or an error if the file is unreadable or lists none.
func UpstreamsFromResolvConf(path string) ([]string, error) {
	cc, err := mdns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var out []string
	for _, s := range cc.Servers {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%s: nameserver %q: %w", path, s, err)
		}
		out = append(out, netip.AddrPortFrom(a, 53).String())
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no nameserver", path)
	}
	return out, nil
}
