// Package daemon is the composition root of `vrouter run`: it owns the
// router, the control socket and the registry of attached containers, and
// turns control requests into router operations.
//
// Locking: Daemon.mu guards the registry. Router calls made under it
// (AddPort) never block on packet I/O; Attached.Close, which waits for a
// port's read goroutine, is always called after mu is released.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/dns"
	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/records"
	"github.com/vrouter/vrouter/router"
)

// Config is what `vrouter run` passes in.
type Config struct {
	Name     string // node name
	StateDir string
	Control  string // control socket path
	MTU      int
	Logger   *slog.Logger
	// OpenPort turns a received fd into a router port; tests replace it.
	OpenPort func(f *os.File, mtu int) (router.Port, string, error)

	// Cluster.
	ClusterKeyFile string         // "" = STATE-DIR/cluster.key, created on first start
	Gossip         string         // gossip bind ADDR:PORT; "" = 127.0.0.1:0 (tests)
	Advertise      string         // address other nodes reach us at; "" = derived from Gossip
	Join           []string       // seeds ADDR:PORT; none = bootstrap a new cluster
	Timing         cluster.Timing // memberlist timings
	// GossipNetwork carries the gossip instead of UDP and TCP sockets on
	// Gossip (tests: cluster/memnet); nil in production.
	GossipNetwork cluster.Network
	// Listen is the WireGuard UDP port (the socket listens on every
	// address); the endpoint other nodes use is the advertise address
	// with this port. 0 picks a free port (tests).
	Listen int

	// DNSUpstreams ("ADDR:PORT", tried in order) answer every name outside
	// the private zone; none: such names get SERVFAIL.
	DNSUpstreams []string

	// EgressAllowLoopback lets containers reach loopback and link-local
	// destinations through the node (tests and demos).
	EgressAllowLoopback bool
	// EgressIPs make the node a gateway: addresses of this host that
	// dedicated egress may use. Checked at start.
	EgressIPs []netip.Addr
	// EgressProbe, on a gateway, is a TCP ADDR:PORT outside that the
	// gateway must reach from its first egress IP to take new flows.
	EgressProbe netip.AddrPort
}

// Daemon is one running vrouter node.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	router  *router.Router
	server  *control.Server
	cluster *cluster.Cluster
	wg      *router.WireGuard
	started time.Time

	resolver *dns.Resolver
	view     *records.ContainerView // the container records, followed through the store's journal
	// hostAddrs are the host's addresses at start: egress never dials them.
	hostAddrs []netip.Addr
	egress    *egressPath  // dedicated egress data path
	assign    *egressState // dedicated egress assignments
	remotes   remoteState  // remote entries installed in the router; owned by reconcileLoop
	// firstSeen is when each alive peer was first seen; owned by reconcileLoop.
	firstSeen map[string]time.Time

	ctx    context.Context // cancelled by Close; ends the loops
	cancel context.CancelFunc
	loops  sync.WaitGroup // joinLoop
	// loopsMu orders Serve's loops.Add before Close's loops.Wait (a
	// WaitGroup must not be added to while Wait may run): after Close has
	// begun, Serve starts no loop.
	loopsMu     sync.Mutex
	loopsClosed bool

	mu     sync.Mutex
	reg    *registry
	stacks map[string]*netStack // by PN id: one per network with local containers

	watchers sync.WaitGroup // one per container, see watch
}

// New validates cfg, creates the state directory and starts listening on
// the control socket. Serve then handles requests until Close.
func New(cfg Config) (*Daemon, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MTU == 0 {
		cfg.MTU = router.DefaultMTU
	}
	if cfg.MTU < 576 || cfg.MTU > 65535 {
		return nil, fmt.Errorf("mtu %d out of range 576-65535", cfg.MTU)
	}
	if cfg.Name == "" {
		return nil, errors.New("node name is empty")
	}
	if cfg.OpenPort == nil {
		return nil, errors.New("no port opener configured")
	}
	if err := checkEgressIPs(cfg.EgressIPs); err != nil {
		return nil, err
	}
	if cfg.EgressProbe.IsValid() && len(cfg.EgressIPs) == 0 {
		return nil, errors.New("an egress probe needs egress IPs (--egress-ip): only gateways probe")
	}
	addrs, err := hostAddrs()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	if cfg.Control == "" {
		cfg.Control = filepath.Join(cfg.StateDir, "control.sock")
	}
	srv, err := control.Listen(cfg.Control)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	srv.Logger = cfg.Logger.With("component", "control")
	rt := router.New(router.Config{Logger: cfg.Logger.With("component", "router")})
	wg, meta, err := newOverlay(&cfg, rt)
	if err != nil {
		rt.Close()
		srv.Close()
		return nil, err
	}
	cl, err := newCluster(&cfg, meta)
	if err != nil {
		wg.Close()
		rt.Close()
		srv.Close()
		return nil, err
	}
	d := &Daemon{
		cfg:       cfg,
		log:       cfg.Logger,
		router:    rt,
		server:    srv,
		cluster:   cl,
		wg:        wg,
		started:   time.Now(),
		reg:       newRegistry(),
		stacks:    make(map[string]*netStack),
		hostAddrs: addrs,
		assign:    newEgressState(),
		view:      records.NewContainerView(cfg.Name, cl.Store()),
	}
	d.egress = newEgressPath(d.view)
	d.remotes = remoteState{entries: records.NewFollower[remoteEntry](d.view)}
	d.resolver, err = newResolver(&cfg, d)
	if err != nil {
		cl.Close()
		wg.Close()
		rt.Close()
		srv.Close()
		return nil, err
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	return d, nil
}

// newCluster loads or creates the cluster key and starts gossip.
func newCluster(cfg *Config, meta cluster.NodeMeta) (*cluster.Cluster, error) {
	var key []byte
	if cfg.ClusterKeyFile != "" {
		k, err := readKeyFile(cfg.ClusterKeyFile)
		if err != nil {
			return nil, fmt.Errorf("cluster key: %w", err)
		}
		key = k
	} else {
		path := filepath.Join(cfg.StateDir, "cluster.key")
		k, created, err := loadOrCreateKey(path)
		if err != nil {
			return nil, fmt.Errorf("cluster key: %w", err)
		}
		if created {
			cfg.Logger.Info("generated a new cluster key; other nodes need it to join (--cluster-key-file)", "path", path)
		}
		key = k
	}
	gossip := cfg.Gossip
	if gossip == "" {
		gossip = "127.0.0.1:0"
	}
	host, portStr, err := net.SplitHostPort(gossip)
	if err != nil {
		return nil, fmt.Errorf("gossip address %q: %w", gossip, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("gossip address %q: bad port", gossip)
	}
	adv := cfg.Advertise
	if adv == "" {
		adv = advertiseAddr(host)
	}
	advIP, err := netip.ParseAddr(adv)
	if err != nil {
		return nil, fmt.Errorf("advertise address %q: %w", adv, err)
	}
	meta.WGEndpoint = netip.AddrPortFrom(advIP, meta.WGEndpoint.Port())
	meta.Gateway = len(cfg.EgressIPs) > 0
	meta.EgressIPs = cfg.EgressIPs
	signing, err := loadSigningKey(filepath.Join(cfg.StateDir, signingKeyFile))
	if err != nil {
		return nil, err
	}
	cl, err := cluster.New(cluster.Config{
		Name:          cfg.Name,
		BindAddr:      host,
		BindPort:      port,
		AdvertiseAddr: adv,
		Key:           key,
		Meta:          meta,
		Timing:        cfg.Timing,
		Logger:        cfg.Logger.With("component", "cluster"),
		Network:       cfg.GossipNetwork,
		SigningKey:    signing,
		PinFile:       filepath.Join(cfg.StateDir, pinFile),
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	return cl, nil
}

// Serve answers control requests until Close. It returns nil after Close.
func (d *Daemon) Serve() error {
	d.loopsMu.Lock()
	if d.loopsClosed {
		d.loopsMu.Unlock()
		return nil // closed before it served: nothing to do
	}
	if len(d.cfg.Join) > 0 {
		d.loops.Add(1)
		go d.joinLoop(d.ctx, d.cfg.Join)
	}
	d.loadEgress()
	if d.cfg.EgressProbe.IsValid() && len(d.cfg.EgressIPs) > 0 {
		d.loops.Add(1)
		go d.probeLoop(d.ctx, d.cfg.EgressProbe)
	}
	d.loops.Add(2)
	go d.reconcileLoop(d.ctx)
	go d.overlayProbeLoop(d.ctx)
	d.loopsMu.Unlock()
	d.log.Info("vrouter running", "node", d.cfg.Name, "control", d.cfg.Control, "state_dir", d.cfg.StateDir,
		"mtu", d.cfg.MTU, "gossip", d.cluster.LocalAddr(), "version", Version())
	return d.server.Serve(d.handle)
}

// Close stops the control socket, then detaches every container. After it
// returns no goroutine of the daemon is left and every port fd is closed.
func (d *Daemon) Close() error {
	err := d.server.Close()
	d.cancel()
	d.loopsMu.Lock()
	d.loopsClosed = true
	d.loopsMu.Unlock()
	d.loops.Wait()
	d.mu.Lock()
	var all []*container
	for _, c := range d.reg.containers {
		all = append(all, c)
	}
	d.reg = newRegistry()
	d.mu.Unlock()
	// Concurrently: the kernel takes ~20 ms to unregister each TUN when its
	// last fd closes, which serially is 20 s for a full network.
	var wg sync.WaitGroup
	for _, c := range all {
		wg.Go(func() { c.attached.Close() })
	}
	wg.Wait()
	// The resolver first: it cancels forwarded queries in flight, so the
	// stacks' DNS servers have nothing left to wait for.
	err = errors.Join(err, d.resolver.Close())
	d.mu.Lock()
	stacks := d.staleStacksLocked() // every network is gone from the registry
	d.mu.Unlock()
	d.closeStacks(stacks)
	d.closeEgressPath()
	err = errors.Join(err, d.cluster.Close(), d.wg.Close(), d.router.Close())
	d.watchers.Wait()
	return err
}

func (d *Daemon) handle(ctx context.Context, req *control.Request, fd *os.File) (any, error) {
	if fd != nil && req.Op != "attach" {
		fd.Close()
		return nil, control.Errorf(control.CodeBadRequest, "only attach takes a file descriptor")
	}
	switch req.Op {
	case "attach":
		return d.attach(ctx, req.Attach, fd)
	case "detach":
		return d.detach(req.Detach.ID)
	case "containers":
		d.mu.Lock()
		local := d.reg.list()
		d.mu.Unlock()
		return append(local, d.remoteContainers()...), nil
	case "peers":
		return d.peers(), nil
	case "names":
		return d.listNames(req.Names)
	case "egress":
		return d.egressOp(ctx, req.Egress)
	case "gateway":
		return d.gatewayOp(req.Gateway)
	case "status":
		return d.status(), nil
	case "unpin":
		return d.unpin(req.Unpin.Name)
	}
	return nil, control.Errorf(control.CodeBadRequest, "unknown op %q", req.Op)
}

func (d *Daemon) status() control.Status {
	st := d.router.Stats()
	d.mu.Lock()
	defer d.mu.Unlock()
	return control.Status{
		Node:          d.cfg.Name,
		Version:       Version(),
		UptimeSeconds: time.Since(d.started).Round(time.Millisecond).Seconds(),
		Control:       d.cfg.Control,
		MTU:           d.cfg.MTU,
		Containers:    len(d.reg.containers),
		Networks:      len(d.reg.networks),
		Counters:      st.Counters,
		Drops:         st.Drops,
		DNS:           d.dnsStatus(),
		Egress:        d.egressStatusLocked(),
		Cluster:       clusterCounters(d.cluster.Stats()),
	}
}

// Version is the module version or VCS revision the binary was built from.
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}
