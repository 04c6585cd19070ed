package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/spf13/pflag"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/dns"
	"github.com/vrouter/vrouter/internal/buildinfo"
	"github.com/vrouter/vrouter/internal/daemon"
	"github.com/vrouter/vrouter/internal/keys"
	"github.com/vrouter/vrouter/internal/paths"
	"github.com/vrouter/vrouter/internal/supervise"
	"github.com/vrouter/vrouter/internal/tunnel"
	"github.com/vrouter/vrouter/router"
)

// resolvConf is where the host's resolvers come from by default.
const resolvConf = "/etc/resolv.conf"

// runFlags are the flags of run, as parsed strings; config turns them into
// a daemon.Config.
type runFlags struct {
	name, stateDir, control, logLevel, keyFile   *string
	gossip, advertise, listen, timing            *string
	probe, debugListen, metricsListen, flowLog   *string
	mtu, flowLogMaxSize, egressFDs, egressMemMiB *int
	join, upstreams, egressIPs, egressDeny       *[]string
	allowLoopback                                *bool
	// stateDirGiven: --state-dir was on the command line (an empty value
	// is then an error, not the default).
	stateDirGiven bool
}

func defineRunFlags(fs *pflag.FlagSet) *runFlags {
	host, _ := os.Hostname()
	return &runFlags{
		name:           fs.String("name", host, "node name (unique in the cluster)"),
		stateDir:       fs.String("state-dir", "", "directory for the daemon's state (default $STATE_DIRECTORY under systemd, /var/lib/vrouter for root, else $XDG_STATE_HOME/vrouter or ~/.local/state/vrouter)"),
		control:        fs.String("control", "", "control socket path (default STATE-DIR/control.sock)"),
		mtu:            fs.Int("mtu", router.DefaultMTU, "MTU of container ports"),
		logLevel:       fs.String("log-level", "info", "log level: debug, info, warn or error"),
		keyFile:        fs.String("cluster-key-file", "", "cluster key (from vrouter keygen); default STATE-DIR/cluster.key, generated on first start"),
		gossip:         fs.String("gossip", "0.0.0.0:7946", "gossip (memberlist) listen IP:PORT"),
		advertise:      fs.String("advertise", "", "address other nodes reach this one at (default: the gossip address, or the host's first global IPv4)"),
		join:           fs.StringArray("join", nil, "ADDR:PORT of a node to join (repeatable); none bootstraps a new cluster"),
		listen:         fs.String("listen", "0.0.0.0:51820", "WireGuard UDP IP:PORT; only PORT is bound, on every address; others reach it at the advertise address and PORT"),
		upstreams:      fs.StringArray("dns-upstream", nil, "ADDR:PORT of a DNS server for names outside the private zone (repeatable, tried in order; default: the nameservers of /etc/resolv.conf)"),
		egressIPs:      fs.StringArray("egress-ip", nil, "an address of this host that dedicated egress may use; makes the node a gateway (repeatable)"),
		probe:          fs.String("egress-probe", "", "on a gateway: TCP IP:PORT outside that must be reachable from the first egress IP for the gateway to take new flows"),
		allowLoopback:  fs.Bool("egress-allow-loopback", false, "let containers reach loopback and link-local destinations through the node (tests, demos)"),
		timing:         fs.String("gossip-timing", "lan", "failure-detection timings: lan (memberlist defaults, ~6 s) or fast (~1 s, more traffic)"),
		debugListen:    fs.String("debug-listen", "", "loopback IP:PORT serving Go's profiler at /debug/pprof/ (performance work; off by default)"),
		flowLog:        fs.String("flow-log", "", "write one JSON line per flow to FILE (- for stdout; off by default)"),
		flowLogMaxSize: fs.Int("flow-log-max-size", 100, "rotate the flow log FILE to FILE.1 at this many MiB"),
		egressDeny:     fs.StringArray("egress-deny", nil, "a destination network (IPv4 CIDR) node egress always refuses, e.g. a metadata endpoint or the LAN (repeatable)"),
		egressFDs:      fs.Int("egress-max-fds", 0, "host sockets node egress may hold in all networks together (default: RLIMIT_NOFILE less a reserve for ports, control, gossip and DNS)"),
		egressMemMiB:   fs.Int("egress-max-memory", 0, "MiB of flow buffers node egress may hold, each flow charged its worst case (default: an eighth of the host's memory)"),
		metricsListen:  fs.String("metrics-listen", "", "IP:PORT serving Prometheus /metrics, /healthz and /readyz (any address; off by default)"),
	}
}

// parseRun turns run's command line into the daemon's configuration. It
// has no side effects (it reads the host name for the default of --name,
// the user and the environment for that of --state-dir: paths.StateDir);
// every error is a usage error. DNSUpstreams stays empty without
// --dns-upstream: cmdRun fills it from resolv.conf.
func parseRun(args []string) (daemon.Config, error) {
	fs := newFlags("run", "run [flags]", io.Discard)
	f := defineRunFlags(fs)
	if err := parse(fs, args); err != nil {
		return daemon.Config{}, err
	}
	if fs.NArg() > 0 {
		return daemon.Config{}, usagef("run takes no arguments, got %q", fs.Args())
	}
	f.stateDirGiven = fs.Changed("state-dir")
	cfg, err := f.config()
	if err != nil {
		return daemon.Config{}, usageError{err.Error()}
	}
	if err := cfg.Validate(); err != nil {
		return daemon.Config{}, usageError{err.Error()}
	}
	return cfg, nil
}

func (f *runFlags) config() (daemon.Config, error) {
	var err error
	var level slog.Level
	if err := level.UnmarshalText([]byte(*f.logLevel)); err != nil {
		return daemon.Config{}, fmt.Errorf("--log-level %q: want debug, info, warn or error", *f.logLevel)
	}
	stateDir := *f.stateDir
	if !f.stateDirGiven {
		d, err := paths.StateDir(os.Getenv, os.Geteuid())
		if err != nil {
			return daemon.Config{}, err
		}
		stateDir = d
	}
	// Relative paths are taken from the working directory once, here, so
	// that the logs, status --json and errors show the paths in use.
	var abs [4]string
	for i, p := range []struct{ flag, v string }{
		{"--state-dir", stateDir}, {"--control", *f.control}, {"--cluster-key-file", *f.keyFile}, {"--flow-log", *f.flowLog},
	} {
		if abs[i], err = absPath(p.flag, p.v); err != nil {
			return daemon.Config{}, err
		}
	}
	cfg := daemon.Config{
		Name:                *f.name,
		StateDir:            abs[0],
		Control:             abs[1],
		MTU:                 *f.mtu,
		Logger:              slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
		ClusterKeyFile:      abs[2],
		Join:                *f.join,
		EgressAllowLoopback: *f.allowLoopback,
		EgressMaxFDs:        *f.egressFDs,
		EgressMaxMemory:     int64(*f.egressMemMiB) << 20,
		OpenPort: func(file *os.File, mtu int) (router.Port, string, error) {
			p, info, err := tunnel.OpenPort(file, mtu)
			return p, info.Name, err
		},
	}
	if cfg.Control == "" {
		cfg.Control = filepath.Join(cfg.StateDir, "control.sock")
	}
	if *f.egressMemMiB > 1<<30 {
		return daemon.Config{}, fmt.Errorf("--egress-max-memory %d: more MiB than any host has", *f.egressMemMiB)
	}
	switch *f.timing {
	case "lan":
		cfg.Timing = cluster.TimingLAN
	case "fast":
		cfg.Timing = cluster.TimingFast
	default:
		return daemon.Config{}, fmt.Errorf("--gossip-timing %q: want lan or fast", *f.timing)
	}
	if cfg.Gossip, err = parseAddrPort("--gossip", *f.gossip); err != nil {
		return daemon.Config{}, err
	}
	if cfg.Listen, err = parseAddrPort("--listen", *f.listen); err != nil {
		return daemon.Config{}, err
	}
	if *f.advertise != "" {
		if cfg.Advertise, err = netip.ParseAddr(*f.advertise); err != nil {
			return daemon.Config{}, fmt.Errorf("--advertise %q: want an IP address", *f.advertise)
		}
	}
	for _, a := range *f.upstreams {
		ap, err := parseAddrPort("--dns-upstream", a)
		if err != nil {
			return daemon.Config{}, err
		}
		cfg.DNSUpstreams = append(cfg.DNSUpstreams, ap)
	}
	for _, a := range *f.egressIPs {
		ip, err := netip.ParseAddr(a)
		if err != nil || !ip.Is4() {
			return daemon.Config{}, fmt.Errorf("--egress-ip %q: want an IPv4 address", a)
		}
		cfg.EgressIPs = append(cfg.EgressIPs, ip)
	}
	for _, a := range *f.egressDeny {
		p, err := netip.ParsePrefix(a)
		if err != nil || !p.Addr().Is4() {
			return daemon.Config{}, fmt.Errorf("--egress-deny %q: want an IPv4 CIDR", a)
		}
		cfg.EgressDeny = append(cfg.EgressDeny, p.Masked())
	}
	if *f.probe != "" {
		if cfg.EgressProbe, err = parseAddrPort("--egress-probe", *f.probe); err != nil {
			return daemon.Config{}, err
		}
	}
	if *f.debugListen != "" {
		if cfg.DebugListen, err = parseAddrPort("--debug-listen", *f.debugListen); err != nil {
			return daemon.Config{}, err
		}
	}
	if *f.flowLogMaxSize < 1 {
		return daemon.Config{}, fmt.Errorf("--flow-log-max-size %d: want at least 1 (MiB)", *f.flowLogMaxSize)
	}
	if *f.flowLog != "" {
		cfg.FlowLog = abs[3]
		cfg.FlowLogMaxSize = int64(*f.flowLogMaxSize) << 20
	}
	if *f.metricsListen != "" {
		if cfg.MetricsListen, err = parseAddrPort("--metrics-listen", *f.metricsListen); err != nil {
			return daemon.Config{}, err
		}
	}
	return cfg, nil
}

// absPath makes a path flag's value absolute; empty (unset, or refused
// by Validate) and "-" (stdout) stay as they are.
func absPath(flag, p string) (string, error) {
	if p == "" || p == "-" || filepath.IsAbs(p) {
		return p, nil
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", flag, p, err)
	}
	return abs, nil
}

func parseAddrPort(flag, s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%s %q: want IP:PORT", flag, s)
	}
	return ap, nil
}

func cmdRun(args []string, stdout io.Writer) error {
	cfg, err := parseRun(args)
	if errors.Is(err, pflag.ErrHelp) {
		fs := newFlags("run", "run [flags]", stdout)
		defineRunFlags(fs)
		fs.Usage()
		return err
	}
	if err != nil {
		return err
	}
	link, err := supervise.FromEnv()
	if err != nil {
		return err
	}
	if link != nil {
		return runWorker(cfg, link)
	}
	if supervise.UnderSystemd() {
		return runSystemd(cfg)
	}
	return runSupervisor(cfg, args)
}

// runSystemd is `vrouter run` under systemd (NOTIFY_SOCKET set): no
// supervisor process, systemd's fd store holds the ports and gives them
// back after a crash or a restart (LISTEN_FDS, named by container id).
func runSystemd(cfg daemon.Config) error {
	log := cfg.Logger
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	restore, dropped, strays, err := supervise.Reconcile(cfg.StateDir, activation.Files(true))
	if err != nil {
		return err
	}
	for _, p := range dropped {
		log.Error("port lost: systemd's fd store did not give its fd back; the container must be attached again",
			"id", p.ID, "network", p.Network, "ip", p.IP, "netns", p.Netns)
	}
	for _, name := range strays {
		log.Warn("fd from systemd's fd store without a journalled port; closed", "fdname", name)
	}
	held := make([]supervise.Port, 0, len(restore))
	for _, hp := range restore {
		held = append(held, hp.Port)
	}
	if len(cfg.DNSUpstreams) == 0 {
		if cfg.DNSUpstreams, err = resolvConfUpstreams(); err != nil {
			log.Warn("no DNS upstreams: names outside the private zone will fail (SERVFAIL); use --dns-upstream", "err", err)
		}
	}
	cfg.Holder = supervise.NewFDStore(cfg.StateDir, held)
	cfg.Restore = restore
	d, err := daemon.New(cfg)
	if err != nil {
		return err
	}
	if err := supervise.Ready(); err != nil {
		log.Warn("systemd", "err", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- d.Serve() }()
	select {
	case <-ctx.Done():
		log.Info("shutting down", "signal", context.Cause(ctx))
	case err := <-served:
		d.Close()
		return fmt.Errorf("control socket: %w", err)
	}
	_ = supervise.Stopping()
	// The ports stay in the fd store: systemd keeps it across a restart
	// and flushes it (closing the TUNs) when the unit stops.
	if err := d.Close(); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	<-served
	log.Info("stopped")
	return nil
}

// runSupervisor is `vrouter run` itself: it holds the ports and runs the
// forwarding worker (this binary again, with supervise.Env set).
func runSupervisor(cfg daemon.Config, args []string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("supervisor: own binary: %w", err)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	unlock, err := supervise.LockStateDir(cfg.StateDir)
	if err != nil {
		return err
	}
	defer unlock()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	upgrades := make(chan string)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				select {
				case upgrades <- "":
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	err = supervise.Run(ctx, supervise.Config{
		Exe:      exe,
		Args:     append([]string{"run"}, args...),
		StateDir: cfg.StateDir,
		Logger:   cfg.Logger,
		Upgrades: upgrades,
	})
	if err != nil {
		return err
	}
	cfg.Logger.Info("stopped")
	return nil
}

// resumeLifeWithin bounds the gap after which a worker starts a new
// cluster life instead of resuming its predecessor's: below the fast
// timings' reap time (5 s), after which peers refuse the old life.
const resumeLifeWithin = 3 * time.Second

// testExitEnv=N makes the N workers after the first exit at once (the
// first must start: a first worker that fails is vrouter run failing):
// tests of the crash-loop backoff only.
const testExitEnv = "VROUTER_TEST_WORKER_EXIT"

// runWorker is the forwarding worker: the daemon, with its ports held by
// the supervisor at the other end of link.
func runWorker(cfg daemon.Config, link *supervise.Link) error {
	log := cfg.Logger
	defer link.Close()
	ports, h, err := link.Handover()
	if err != nil {
		return err
	}
	if h.Standby {
		// The new binary of an upgrade: its flags parsed; say so and wait
		// for the old worker to let go of the ports.
		if err := link.Standby(buildinfo.Version()); err != nil {
			return err
		}
		log.Info("upgrade: standing by for the handover", "version", buildinfo.Version())
		if ports, h, err = link.Handover(); err != nil {
			return err
		}
	}
	if n, _ := strconv.Atoi(os.Getenv(testExitEnv)); h.Restarts >= 1 && h.Restarts <= n {
		for _, p := range ports {
			p.File.Close()
		}
		log.Error("exiting at once (" + testExitEnv + ", for tests only)")
		return errors.New("test worker exit")
	}
	if len(cfg.DNSUpstreams) == 0 {
		cfg.DNSUpstreams, err = resolvConfUpstreams()
		if err != nil {
			log.Warn("no DNS upstreams: names outside the private zone will fail (SERVFAIL); use --dns-upstream", "err", err)
		}
	}
	if l := h.Life; l != nil {
		// The same ports as the previous worker, also when the flags let
		// the first one pick them: peers know this node by them.
		if cfg.Gossip.Port() == 0 && l.GossipPort != 0 {
			cfg.Gossip = netip.AddrPortFrom(cfg.Gossip.Addr(), l.GossipPort)
		}
		if cfg.Listen.Port() == 0 && l.ListenPort != 0 {
			cfg.Listen = netip.AddrPortFrom(cfg.Listen.Addr(), l.ListenPort)
		}
		cfg.Rejoin = l.Peers
		cfg.KnownPeers = l.PeerNames
		// Resume the cluster life only while peers still hold it: past
		// their reap time they refuse its records (a long crash loop).
		if !h.DiedAt.IsZero() && time.Since(h.DiedAt) < resumeLifeWithin {
			cfg.ResumeBoot, cfg.ResumeStarted = l.BootID, l.Started
		}
	}
	cfg.Holder = link
	cfg.Restore = ports
	cfg.Supervision = link.Info
	cfg.Upgrade = link.Upgrade
	link.Start()
	d, err := daemon.New(cfg)
	if err != nil {
		return err
	}
	life := d.Life()
	if err := link.SetLife(life); err != nil {
		log.Warn("supervisor: life", "err", err)
	}
	if err := link.Ready(); err != nil {
		log.Warn("supervisor: ready", "err", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- d.Serve() }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			// Peers come and go: the next worker rejoins those alive now.
			if l := d.Life(); !slices.Equal(l.Peers, life.Peers) || !slices.Equal(l.PeerNames, life.PeerNames) {
				life = l
				if err := link.SetLife(l); err != nil {
					log.Warn("supervisor: life", "err", err)
				}
			}
			continue
		case <-ctx.Done():
			log.Info("shutting down", "signal", context.Cause(ctx))
			err = d.Close()
		case <-link.Stopped():
			log.Info("handing over to the new worker (upgrade)")
			err = d.Suspend()
		case <-link.Gone():
			log.Error("supervisor gone; shutting down")
			err = d.Close()
		case err := <-served:
			d.Close()
			return fmt.Errorf("control socket: %w", err)
		}
		break
	}
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	<-served
	log.Info("worker stopped")
	return nil
}

// resolvConfUpstreams is the default of --dns-upstream.
func resolvConfUpstreams() ([]netip.AddrPort, error) {
	ups, err := dns.UpstreamsFromResolvConf(resolvConf)
	if err != nil {
		return nil, err
	}
	out := make([]netip.AddrPort, 0, len(ups))
	for _, u := range ups {
		ap, err := netip.ParseAddrPort(u)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", resolvConf, err)
		}
		out = append(out, ap)
	}
	return out, nil
}

func cmdKeygen(args []string, stdout io.Writer) error {
	fs := newFlags("keygen", "keygen", stdout)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("keygen takes no arguments")
	}
	k, err := keys.Generate()
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, keys.Encode(k))
	return nil
}
