package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/supervise"
	"github.com/vrouter/vrouter/router"
)

// Config is what `vrouter run` passes in. Each field says the flag it comes
// from; Validate's errors name that flag, so the CLI can show them as they
// are. The zero value of a field marked "zero:" is filled in by New.
type Config struct {
	Name     string // --name: node name, unique in the cluster
	StateDir string // --state-dir
	Control  string // --control: socket path; zero: STATE-DIR/control.sock
	MTU      int    // --mtu: of container ports, 576-65535; zero: router.DefaultMTU
	Logger   *slog.Logger
	// OpenPort turns a received fd into a router port; tests replace it.
	OpenPort func(f *os.File, mtu int) (router.Port, string, error)

	// Cluster.
	ClusterKeyFile string // --cluster-key-file; "": STATE-DIR/cluster.key, created on first start
	// Gossip is memberlist's bind address (--gossip); zero: 127.0.0.1:0 (tests).
	Gossip netip.AddrPort
	// Advertise is the address other nodes reach us at (--advertise);
	// zero: the gossip address if concrete, else the host's first global
	// IPv4, else 127.0.0.1.
	Advertise netip.Addr
	// Join lists seeds as HOST:PORT (--join); none: bootstrap a new
	// cluster. Strings, not addresses: memberlist resolves names at each
	// attempt.
	Join   []string
	Timing cluster.Timing // --gossip-timing
	// GossipNetwork carries the gossip instead of UDP and TCP sockets on
	// Gossip (tests: cluster/memnet); nil in production.
	GossipNetwork cluster.Network
	// Listen is the WireGuard UDP address (--listen). Only its port is
	// bound, on every address (wireguard-go's bind takes a port only);
	// other nodes send to the advertise address and this port. Port 0
	// picks a free one (tests); zero: 0.0.0.0:0.
	Listen netip.AddrPort

	// DNSUpstreams (--dns-upstream, tried in order) answer every name
	// outside the private zone; none: such names get SERVFAIL.
	DNSUpstreams []netip.AddrPort

	// EgressAllowLoopback lets containers reach loopback and link-local
	// destinations through the node (--egress-allow-loopback; tests, demos).
	EgressAllowLoopback bool
	// EgressIPs make the node a gateway (--egress-ip): IPv4 addresses of
	// this host that dedicated egress may use; New checks the host has them.
	EgressIPs []netip.Addr
	// EgressProbe, on a gateway, is a TCP IP:PORT outside that the gateway
	// must reach from its first egress IP to take new flows
	// (--egress-probe); zero: no probe.
	EgressProbe netip.AddrPort

	// EgressDeny are destination networks node egress always refuses
	// (--egress-deny, repeatable): metadata endpoints outside link-local,
	// the LAN.
	EgressDeny []netip.Prefix
	// EgressMaxFDs bounds the host sockets node egress holds in all
	// networks together (--egress-max-fds); zero: RLIMIT_NOFILE less a
	// reserve for ports, control, gossip and DNS (DefaultEgressBudget).
	EgressMaxFDs int
	// EgressMaxMemory bounds the buffer memory of node egress flows, in
	// bytes, each flow charged its worst case (--egress-max-memory, in
	// MiB); zero: an eighth of the host's memory.
	EgressMaxMemory int64

	// DebugListen serves Go's profiler at /debug/pprof/ (--debug-listen);
	// loopback only. Zero: off.
	DebugListen netip.AddrPort
	// Holder keeps a dup of every port's fd outside this process (the
	// supervisor of `vrouter run`, or systemd's fd store), so that ports
	// outlive the worker; nil: they die with it.
	Holder PortHolder
	// Restore are the ports a previous worker attached, handed back by
	// the holder; New re-attaches them as they were before it joins.
	Restore []supervise.HeldPort
	// Rejoin are gossip addresses of peers the previous worker knew,
	// joined like Join (a restarted seed finds its cluster at once).
	Rejoin []string
	// KnownPeers are the node names of those peers: this worker dials
	// them at once, whichever name is lower (see reconcile), because they
	// still hold a WireGuard session with the previous worker that only
	// a handshake from this side replaces without a 15 s wait.
	KnownPeers []string
	// ResumeBoot and ResumeStarted, both non-zero, resume the previous
	// worker's cluster life (cluster.New): peers keep its records.
	ResumeBoot    uint64
	ResumeStarted int64
	// Supervision reports the supervisor's counters for status; nil: the
	// process is not supervised.
	Supervision func() supervise.Handover
	// Upgrade asks the supervisor to upgrade the worker to a binary
	// ("" for its own path); it returns the attempt's number. Nil: no
	// supervisor.
	Upgrade func(binary string) (int, error)

	// MetricsListen serves Prometheus /metrics, /healthz and /readyz
	// (--metrics-listen; internal/metrics); any address. Zero: off.
	MetricsListen netip.AddrPort
	// FlowLog writes one JSON line per flow to this file ("-": stdout;
	// --flow-log; internal/flowlog). "": off.
	FlowLog string
	// FlowLogMaxSize rotates the flow log at this many bytes
	// (--flow-log-max-size, in MiB there); 0: flowlog.DefaultMaxSize.
	FlowLogMaxSize int64
}

// Validate checks cfg as New gets it after filling in the zero values: it
// only looks at the values (whether the host has the egress IPs is New's
// check). The CLI calls it on the flags it parsed, so bad values are usage
// errors there.
func (cfg *Config) Validate() error {
	switch {
	case cfg.Name == "":
		return errors.New("--name: the node name is empty")
	case cfg.StateDir == "":
		return errors.New("--state-dir: the state directory is empty")
	case cfg.Control == "":
		return errors.New("--control: the control socket path is empty")
	case cfg.MTU < 576 || cfg.MTU > 65535:
		return fmt.Errorf("--mtu %d: want 576-65535", cfg.MTU)
	case cfg.OpenPort == nil:
		return errors.New("no port opener configured")
	case !cfg.Gossip.IsValid():
		return errors.New("--gossip: no address")
	case !cfg.Listen.IsValid():
		return errors.New("--listen: no address")
	case cfg.Timing != cluster.TimingLAN && cfg.Timing != cluster.TimingFast:
		return fmt.Errorf("--gossip-timing %d: want lan or fast", cfg.Timing)
	}
	for _, j := range cfg.Join {
		if _, port, err := net.SplitHostPort(j); err != nil || !validPort(port) {
			return fmt.Errorf("--join %q: want ADDR:PORT", j)
		}
	}
	for _, u := range cfg.DNSUpstreams {
		if !u.IsValid() || u.Port() == 0 {
			return fmt.Errorf("--dns-upstream %s: want IP:PORT with a port other than 0", u)
		}
	}
	seen := make(map[netip.Addr]bool)
	for _, ip := range cfg.EgressIPs {
		if !ip.Is4() {
			return fmt.Errorf("--egress-ip %s: not an IPv4 address", ip)
		}
		if seen[ip] {
			return fmt.Errorf("--egress-ip %s given twice", ip)
		}
		seen[ip] = true
	}
	if cfg.FlowLogMaxSize < 0 {
		return fmt.Errorf("--flow-log-max-size %d: negative", cfg.FlowLogMaxSize)
	}
	if cfg.EgressProbe.IsValid() && len(cfg.EgressIPs) == 0 {
		return errors.New("--egress-probe needs egress IPs (--egress-ip): only gateways probe")
	}
	for _, p := range cfg.EgressDeny {
		if !p.IsValid() || !p.Addr().Is4() {
			return fmt.Errorf("--egress-deny %s: want an IPv4 CIDR", p)
		}
	}
	if cfg.EgressMaxFDs < 0 {
		return fmt.Errorf("--egress-max-fds %d: want a positive number (0: derived from RLIMIT_NOFILE)", cfg.EgressMaxFDs)
	}
	if cfg.EgressMaxMemory < 0 {
		return fmt.Errorf("--egress-max-memory %d: want a positive number of MiB (0: derived from the host's memory)", cfg.EgressMaxMemory>>20)
	}
	if cfg.DebugListen.IsValid() && !cfg.DebugListen.Addr().IsLoopback() {
		return fmt.Errorf("--debug-listen %s: must be a loopback address (profiles expose the daemon's memory)", cfg.DebugListen)
	}
	return nil
}

func validPort(s string) bool {
	p, err := strconv.Atoi(s)
	return err == nil && p >= 0 && p <= 65535
}

// withDefaults returns cfg with its zero values filled in (see Config).
func (cfg Config) withDefaults() Config {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MTU == 0 {
		cfg.MTU = router.DefaultMTU
	}
	if cfg.Control == "" && cfg.StateDir != "" {
		cfg.Control = filepath.Join(cfg.StateDir, "control.sock")
	}
	if !cfg.Gossip.IsValid() {
		cfg.Gossip = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 0)
	}
	if !cfg.Listen.IsValid() {
		cfg.Listen = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	}
	return cfg
}
