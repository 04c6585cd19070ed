package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/dns"
	"github.com/vrouter/vrouter/internal/daemon"
	"github.com/vrouter/vrouter/internal/keys"
	"github.com/vrouter/vrouter/internal/tunnel"
	"github.com/vrouter/vrouter/router"
)

// resolvConf is where the host's resolvers come from by default.
const resolvConf = "/etc/resolv.conf"

func cmdRun(args []string, stdout io.Writer) error {
	fs := newFlags("run", "run [flags]", stdout)
	host, _ := os.Hostname()
	name := fs.String("name", host, "node name (unique in the cluster)")
	stateDir := fs.String("state-dir", ".vrouter", "directory for the daemon's state")
	controlPath := fs.String("control", "", "control socket path (default STATE-DIR/control.sock)")
	mtu := fs.Int("mtu", router.DefaultMTU, "MTU of container ports")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	keyFile := fs.String("cluster-key-file", "", "cluster key (from vrouter keygen); default STATE-DIR/cluster.key, generated on first start")
	gossip := fs.String("gossip", "0.0.0.0:7946", "gossip (memberlist) listen ADDR:PORT")
	advertise := fs.String("advertise", "", "address other nodes reach this one at (default: the gossip address, or the host's first global IPv4)")
	join := fs.StringArray("join", nil, "ADDR:PORT of a node to join (repeatable); none bootstraps a new cluster")
	listen := fs.String("listen", "0.0.0.0:51820", "WireGuard UDP ADDR:PORT; the socket listens on every address, others reach it at the advertise address and PORT")
	upstreams := fs.StringArray("dns-upstream", nil, "ADDR:PORT of a DNS server for names outside the private zone (repeatable, tried in order; default: the nameservers of /etc/resolv.conf)")
	egressIPs := fs.StringArray("egress-ip", nil, "an address of this host that dedicated egress may use; makes the node a gateway (repeatable)")
	probe := fs.String("egress-probe", "", "on a gateway: TCP IP:PORT outside that must be reachable from the first egress IP for the gateway to take new flows")
	allowLoopback := fs.Bool("egress-allow-loopback", false, "let containers reach loopback and link-local destinations through the node (tests, demos)")
	timing := fs.String("gossip-timing", "lan", "failure-detection timings: lan (memberlist defaults, ~6 s) or fast (~1 s, more traffic)")
	debugListen := fs.String("debug-listen", "", "loopback IP:PORT serving Go's profiler at /debug/pprof/ (performance work; off by default)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("run takes no arguments, got %q", fs.Args())
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return usagef("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	if *mtu < 576 || *mtu > 65535 {
		return usagef("--mtu %d: want 576-65535", *mtu)
	}
	var tm cluster.Timing
	switch *timing {
	case "lan":
		tm = cluster.TimingLAN
	case "fast":
		tm = cluster.TimingFast
	default:
		return usagef("--gossip-timing %q: want lan or fast", *timing)
	}
	for _, a := range append([]string{*gossip, *listen}, *join...) {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return usagef("%q: want ADDR:PORT", a)
		}
	}
	for _, a := range *upstreams {
		if _, err := netip.ParseAddrPort(a); err != nil {
			return usagef("--dns-upstream %q: want IP:PORT", a)
		}
	}
	var egress []netip.Addr
	for _, a := range *egressIPs {
		ip, err := netip.ParseAddr(a)
		if err != nil || !ip.Is4() {
			return usagef("--egress-ip %q: want an IPv4 address", a)
		}
		egress = append(egress, ip)
	}
	var probeAddr netip.AddrPort
	if *probe != "" {
		a, err := netip.ParseAddrPort(*probe)
		if err != nil {
			return usagef("--egress-probe %q: want IP:PORT", *probe)
		}
		probeAddr = a
	}
	var debugAddr netip.AddrPort
	if *debugListen != "" {
		a, err := parseDebugListen(*debugListen)
		if err != nil {
			return usagef("%v", err)
		}
		debugAddr = a
	}
	_, lp, _ := net.SplitHostPort(*listen)
	listenPort, err := strconv.Atoi(lp)
	if err != nil || listenPort < 0 || listenPort > 65535 {
		return usagef("--listen %q: bad port", *listen)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if len(*upstreams) == 0 {
		up, err := dns.UpstreamsFromResolvConf(resolvConf)
		if err != nil {
			log.Warn("no DNS upstreams: names outside the private zone will fail (SERVFAIL); use --dns-upstream", "err", err)
		}
		*upstreams = up
	}
	d, err := daemon.New(daemon.Config{
		Name:     *name,
		StateDir: *stateDir,
		Control:  *controlPath,
		MTU:      *mtu,
		Logger:   log,

		ClusterKeyFile: *keyFile,
		Gossip:         *gossip,
		Advertise:      *advertise,
		Join:           *join,
		Timing:         tm,
		Listen:         listenPort,
		DNSUpstreams:   *upstreams,

		EgressIPs:           egress,
		EgressAllowLoopback: *allowLoopback,
		EgressProbe:         probeAddr,
		OpenPort: func(f *os.File, mtu int) (router.Port, string, error) {
			p, info, err := tunnel.OpenPort(f, mtu)
			return p, info.Name, err
		},
	})
	if err != nil {
		return err
	}
	if debugAddr.IsValid() {
		dbg, err := startDebug(debugAddr, log)
		if err != nil {
			d.Close()
			return err
		}
		defer dbg.Close()
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
	if err := d.Close(); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	<-served
	log.Info("stopped")
	return nil
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
