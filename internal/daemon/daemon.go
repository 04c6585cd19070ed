// Package daemon is the composition root of `vrouter run`: it owns the
// router, the control socket and the registry of attached containers, and
// turns control requests into router operations. What it writes in the
// cluster store is internal/records; dedicated egress is internal/egress,
// which it builds, starts, reconciles and closes.
//
// Lifecycle: New validates the Config, builds everything (on a failure it
// closes what it built, newest first) and starts every loop; Serve only
// answers the control socket; Close stops the socket, the loops, the
// containers and then the rest, in that order.
//
// Locking: Daemon.mu guards the registry. Router calls made under it
// (AddPort) never block on packet I/O; Attached.Close, which waits for a
// port's read goroutine, is always called after mu is released.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/dns"
	"github.com/vrouter/vrouter/internal/buildinfo"
	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/egress"
	"github.com/vrouter/vrouter/internal/flowlog"
	"github.com/vrouter/vrouter/internal/metrics"
	"github.com/vrouter/vrouter/internal/ratelog"
	"github.com/vrouter/vrouter/internal/records"
	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/stack"
)

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
	// budget bounds node egress in all stacks together.
	budget *stack.Budget
	// deny holds the host's own addresses, which egress never dials,
	// refreshed when they change (addrwatch.go).
	deny          *stack.DenyList
	addrRefreshes atomic.Uint64
	rlog          *ratelog.Logger // what outsiders can make the daemon log
	egress        *egress.Service // dedicated egress: assignments and data path
	remotes       remoteState     // remote entries installed in the router; owned by reconcileLoop
	// firstSeen is when each alive peer was first seen; owned by reconcileLoop.
	firstSeen map[string]time.Time
	// overlayLocal is this node's overlay address (records overlay claims);
	// owned by reconcileLoop once started.
	overlayLocal netip.Addr
	// overlayConflicts are the peers reconcile leaves out of the overlay
	// (peerConflicts), read by peers and status.
	overlayConflicts struct {
		sync.Mutex
		peers map[string]string
	}

	debug   *debugServer    // nil unless Config.DebugListen
	metrics *metrics.Server // nil unless Config.MetricsListen
	// flowLog and flowTable are nil unless Config.FlowLog (flowlog.go).
	flowLog   *flowlog.Logger
	flowTable *router.FlowTable

	ctx    context.Context // cancelled by Close; ends the loops
	cancel context.CancelFunc
	loops  sync.WaitGroup // every loop, all started by start

	mu     sync.Mutex
	reg    *registry
	stacks map[string]*netStack // by PN id: one per network with local containers

	watchers sync.WaitGroup // one per container until its portEnded returns, see watch

	obs *observed // for metrics (metrics.go)
}

// New validates cfg, creates the state directory, listens on the control
// socket, joins gossip and starts the daemon's loops. Serve then answers
// control requests until Close, which must be called once New succeeded.
func New(cfg Config) (_ *Daemon, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.EgressMaxFDs == 0 || cfg.EgressMaxMemory == 0 {
		def, err := DefaultEgressBudget()
		if err != nil {
			return nil, fmt.Errorf("egress budget: %w", err)
		}
		if cfg.EgressMaxFDs == 0 {
			cfg.EgressMaxFDs = def.FDs
		}
		if cfg.EgressMaxMemory == 0 {
			cfg.EgressMaxMemory = def.Memory
		}
	}
	if err := checkEgressIPs(cfg.EgressIPs); err != nil {
		return nil, err
	}
	addrs, err := hostAddrs()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	if err := checkStateDir(cfg.StateDir); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	// undo closes, newest first, what New has built when a later step
	// fails; after the last step it is dropped and Close takes over.
	var undo closers
	defer func() {
		if err != nil {
			undo.close()
		}
	}()
	srv, err := control.Listen(cfg.Control)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	undo.push(srv.Close)
	srv.Logger = cfg.Logger.With("component", "control")
	srv.ReleaseIdle = control.DefaultReleaseIdle
	rt := router.New(router.Config{Logger: cfg.Logger.With("component", "router")})
	undo.push(rt.Close)
	wg, meta, err := newOverlay(&cfg, rt)
	if err != nil {
		return nil, err
	}
	undo.push(wg.Close)
	cl, err := newCluster(&cfg, meta)
	if err != nil {
		return nil, err
	}
	undo.push(cl.Close)
	d := &Daemon{
		cfg:     cfg,
		log:     cfg.Logger,
		router:  rt,
		server:  srv,
		cluster: cl,
		wg:      wg,
		started: time.Now(),
		reg:     newRegistry(),
		stacks:  make(map[string]*netStack),
		deny:    stack.NewDenyList(denyAddrs(addrs)),
		rlog:    ratelog.New(cfg.Logger, 0),
		budget:  stack.NewBudget(stack.BudgetLimits{FDs: cfg.EgressMaxFDs, Memory: cfg.EgressMaxMemory}),
		view:    records.NewContainerView(cfg.Name, cl.Store()),
		obs:     newObserved(),

		overlayLocal: meta.Overlay,
	}
	d.remotes = remoteState{entries: records.NewFollower[remoteEntry](d.view)}
	d.egress, err = egress.New(egress.Deps{
		Self:     cfg.Name,
		StateDir: cfg.StateDir,
		IPs:      cfg.EgressIPs,
		Probe:    cfg.EgressProbe,
		Members:  cl,
		Store:    cl.Store(),
		Datapath: rt,
		Apps:     localApps{d},
		View:     d.view,
		NewNAT:   d.newNAT,
		Logger:   cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	undo.push(func() error { d.egress.Close(); return nil })
	d.resolver, err = newResolver(&cfg, d)
	if err != nil {
		return nil, err
	}
	undo.push(d.resolver.Close)
	if cfg.DebugListen.IsValid() {
		d.debug, err = startDebug(cfg.DebugListen, cfg.Logger)
		if err != nil {
			return nil, err
		}
	}
	if cfg.FlowLog != "" {
		if err := d.startFlowLog(); err != nil {
			return nil, err
		}
		undo.push(d.closeFlowLog)
	}
	if cfg.MetricsListen.IsValid() {
		d.metrics, err = metrics.Listen(cfg.MetricsListen.String(), d, cfg.Logger.With("component", "metrics"))
		if err != nil {
			return nil, err
		}
	}
	d.start()
	return d, nil
}

// start starts every loop of the daemon; Close stops them. It runs once,
// at the end of New, so no loop can start after Close has begun.
func (d *Daemon) start() {
	d.ctx, d.cancel = context.WithCancel(context.Background())
	// Before the join: peers must never see this life without the
	// records of the ports it took over.
	d.restore(d.cfg.Restore)
	d.cfg.Restore = nil
	if seeds := joinSeeds(d.cfg.Join, d.cfg.Rejoin); len(seeds) > 0 {
		d.loops.Add(1)
		go d.joinLoop(d.ctx, seeds)
	}
	d.egress.Start()
	d.loops.Add(2)
	go d.reconcileLoop(d.ctx)
	go d.watchAddrs(d.ctx, netlinkAddrs, hostAddrs)
}

// newCluster loads or creates the cluster key and starts gossip.
func newCluster(cfg *Config, meta cluster.NodeMeta) (*cluster.Cluster, error) {
	var key []byte
	if cfg.ClusterKeyFile != "" {
		k, err := readKeyFile(cfg.ClusterKeyFile)
		if err == nil {
			err = checkGivenKeyFile(cfg.ClusterKeyFile)
		}
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
	advIP := cfg.Advertise
	if !advIP.IsValid() {
		advIP = advertiseAddr(cfg.Gossip.Addr())
	}
	meta.WGEndpoint = netip.AddrPortFrom(advIP, meta.WGEndpoint.Port())
	meta.BootID, meta.Started = cfg.ResumeBoot, cfg.ResumeStarted
	meta.Gateway = len(cfg.EgressIPs) > 0
	meta.EgressIPs = cfg.EgressIPs
	signing, err := loadSigningKey(filepath.Join(cfg.StateDir, signingKeyFile))
	if err != nil {
		return nil, err
	}
	// Whoever can write the pins can make this node trust any key.
	pins := filepath.Join(cfg.StateDir, pinFile)
	if err := checkPrivateFile(pins); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("pinned signing keys: %w", err)
	}
	cl, err := cluster.New(cluster.Config{
		Name:          cfg.Name,
		BindAddr:      cfg.Gossip.Addr().String(),
		BindPort:      int(cfg.Gossip.Port()),
		AdvertiseAddr: advIP.String(),
		Key:           key,
		Meta:          meta,
		Timing:        cfg.Timing,
		Logger:        cfg.Logger.With("component", "cluster"),
		Network:       cfg.GossipNetwork,
		SigningKey:    signing,
		PinFile:       pins,
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	return cl, nil
}

// Serve answers control requests until Close. It returns nil after Close,
// also when Close came first.
func (d *Daemon) Serve() error {
	d.log.Info("vrouter running", "node", d.cfg.Name, "control", d.cfg.Control, "state_dir", d.cfg.StateDir,
		"mtu", d.cfg.MTU, "gossip", d.cluster.LocalAddr(), "listen", d.cfg.Listen, "version", buildinfo.Version())
	return d.server.Serve(d.handle)
}

// Close stops the control socket, then detaches every container. After it
// returns no goroutine of the daemon is left and every port fd is closed.
func (d *Daemon) Close() error { return d.shutdown(true) }

// Suspend stops like Close but leaves the cluster as a crash would: no
// goodbye, so peers keep this node's records for the worker that takes
// over its ports (an upgrade). The holder keeps the ports.
func (d *Daemon) Suspend() error { return d.shutdown(false) }

func (d *Daemon) shutdown(graceful bool) error {
	err := d.server.Close()
	d.cancel() // /readyz fails from now on
	if d.metrics != nil {
		// First: a scrape reads what the rest of Close takes apart.
		err = errors.Join(err, d.metrics.Close())
	}
	err = errors.Join(err, d.closeFlowLog())
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
	d.egress.Close()
	if graceful {
		err = errors.Join(err, d.cluster.Close())
	} else {
		d.cluster.Kill()
	}
	err = errors.Join(err, d.wg.Close(), d.router.Close())
	d.watchers.Wait()
	if d.debug != nil {
		err = errors.Join(err, d.debug.Close())
	}
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
		return d.egress.Assigner.EgressOp(ctx, req.Egress)
	case "gateway":
		return d.egress.Assigner.GatewayOp(req.Gateway)
	case "status":
		return d.status(), nil
	case "unpin":
		return d.unpin(req.Unpin.Name)
	case "upgrade":
		if d.cfg.Upgrade == nil {
			return nil, control.Errorf(control.CodeInvalid, "this daemon has no supervisor to upgrade it (under systemd: systemctl restart keeps the ports in the fd store)")
		}
		if b := req.Upgrade.Binary; b != "" && !filepath.IsAbs(b) {
			return nil, control.Errorf(control.CodeInvalid, "upgrade: binary %q: want an absolute path", b)
		}
		n, err := d.cfg.Upgrade(req.Upgrade.Binary)
		if err != nil {
			return nil, control.Errorf(control.CodeConflict, "upgrade: %v", err)
		}
		return control.UpgradeStarted{Attempt: n}, nil
	}
	return nil, control.Errorf(control.CodeBadRequest, "unknown op %q", req.Op)
}

func (d *Daemon) status() control.Status {
	st := d.router.Stats()
	alarms := d.alarms() // before d.mu: remotes.mu comes first
	d.mu.Lock()
	defer d.mu.Unlock()
	s := control.Status{
		Pid:           os.Getpid(),
		StartedAt:     d.started.UTC(),
		Node:          d.cfg.Name,
		Version:       buildinfo.Version(),
		UptimeSeconds: time.Since(d.started).Round(time.Millisecond).Seconds(),
		Control:       d.cfg.Control,
		MTU:           d.cfg.MTU,
		Containers:    len(d.reg.containers),
		Networks:      len(d.reg.networks),
		Counters:      st.Counters,
		Drops:         st.Drops,
		DNS:           d.dnsStatus(),
		Egress:        d.egressStatusLocked(),
		Budget:        budgetStatus(d.budget),
		Cluster:       clusterCounters(d.cluster.Stats()),
		Alarms:        alarms,
	}
	if d.cfg.Supervision != nil {
		h := d.cfg.Supervision()
		s.SupervisorPID = h.SupervisorPID
		s.Restarts = h.Restarts
		s.Supervisor = &control.SupervisorStatus{
			StartedAt:       h.StartedAt.UTC(),
			LastExit:        h.LastExit,
			CrashLoop:       h.CrashLoop,
			BackoffSeconds:  h.Backoff,
			Upgrades:        h.Upgrades,
			UpgradeAttempts: h.Attempts,
			LastUpgrade:     h.LastUpgrade,
			Dropped:         h.Dropped,
			RestoreFailed:   d.obs.restoreFailed.Load(),
		}
	}
	return s
}

// joinSeeds is Join followed by the rejoin addresses it does not list.
func joinSeeds(join, rejoin []string) []string {
	out := slices.Clone(join)
	for _, r := range rejoin {
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}
