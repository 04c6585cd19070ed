package main

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/daemon"
	"github.com/vrouter/vrouter/internal/paths"
)

// defaultRun is what `vrouter run` without flags configures (README,
// "flag of run").
func defaultRun(t *testing.T) daemon.Config {
	t.Helper()
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := paths.StateDir(os.Getenv, os.Geteuid())
	if err != nil {
		t.Fatal(err)
	}
	return daemon.Config{
		Name:     host,
		StateDir: dir,
		Control:  filepath.Join(dir, "control.sock"),
		MTU:      1390,
		Gossip:   netip.MustParseAddrPort("0.0.0.0:7946"),
		Listen:   netip.MustParseAddrPort("0.0.0.0:51820"),
		Timing:   cluster.TimingLAN,
	}
}

func TestParseRun(t *testing.T) {
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort
	ip := netip.MustParseAddr
	tests := []struct {
		name  string
		args  []string
		edit  func(*daemon.Config)
		level slog.Level // the lowest level logged
	}{
		{name: "defaults", edit: func(*daemon.Config) {}},
		{name: "name", args: []string{"--name", "n1"}, edit: func(c *daemon.Config) { c.Name = "n1" }},
		{name: "state dir moves the socket", args: []string{"--state-dir", "/var/lib/vr"}, edit: func(c *daemon.Config) {
			c.StateDir, c.Control = "/var/lib/vr", "/var/lib/vr/control.sock"
		}},
		{name: "control", args: []string{"--state-dir", "/s", "--control", "/run/vr.sock"}, edit: func(c *daemon.Config) {
			c.StateDir, c.Control = "/s", "/run/vr.sock"
		}},
		{name: "relative state dir, from the working directory", args: []string{"--state-dir", "s"}, edit: func(c *daemon.Config) {
			c.StateDir, c.Control = filepath.Join(cwd, "s"), filepath.Join(cwd, "s", "control.sock")
		}},
		{name: "relative paths, cleaned", args: []string{"--state-dir", "./a/../s/", "--control", "run/vr.sock", "--cluster-key-file", "k", "--flow-log", "f.jsonl"}, edit: func(c *daemon.Config) {
			c.StateDir, c.Control, c.ClusterKeyFile = filepath.Join(cwd, "s"), filepath.Join(cwd, "run", "vr.sock"), filepath.Join(cwd, "k")
			c.FlowLog, c.FlowLogMaxSize = filepath.Join(cwd, "f.jsonl"), 100<<20
		}},
		{name: "flow log to stdout", args: []string{"--flow-log", "-"}, edit: func(c *daemon.Config) { c.FlowLog, c.FlowLogMaxSize = "-", 100<<20 }},
		{name: "mtu", args: []string{"--mtu", "9000"}, edit: func(c *daemon.Config) { c.MTU = 9000 }},
		{name: "mtu bounds", args: []string{"--mtu=576"}, edit: func(c *daemon.Config) { c.MTU = 576 }},
		{name: "log level", args: []string{"--log-level", "debug"}, edit: func(*daemon.Config) {}, level: slog.LevelDebug},
		{name: "log level error", args: []string{"--log-level", "error"}, edit: func(*daemon.Config) {}, level: slog.LevelError},
		{name: "cluster key file", args: []string{"--cluster-key-file", "/etc/vr/k"}, edit: func(c *daemon.Config) { c.ClusterKeyFile = "/etc/vr/k" }},
		{name: "gossip", args: []string{"--gossip", "127.0.0.1:7947"}, edit: func(c *daemon.Config) { c.Gossip = ap("127.0.0.1:7947") }},
		{name: "gossip v6", args: []string{"--gossip", "[::1]:0"}, edit: func(c *daemon.Config) { c.Gossip = ap("[::1]:0") }},
		{name: "advertise", args: []string{"--advertise", "192.0.2.7"}, edit: func(c *daemon.Config) { c.Advertise = ip("192.0.2.7") }},
		{name: "join twice", args: []string{"--join", "127.0.0.1:7946", "--join", "node2:7946"}, edit: func(c *daemon.Config) {
			c.Join = []string{"127.0.0.1:7946", "node2:7946"}
		}},
		{name: "listen keeps its address", args: []string{"--listen", "127.0.0.1:0"}, edit: func(c *daemon.Config) { c.Listen = ap("127.0.0.1:0") }},
		{name: "dns upstreams in order", args: []string{"--dns-upstream", "127.0.0.1:5353", "--dns-upstream", "[::1]:53"}, edit: func(c *daemon.Config) {
			c.DNSUpstreams = []netip.AddrPort{ap("127.0.0.1:5353"), ap("[::1]:53")}
		}},
		{name: "egress ips and probe", args: []string{"--egress-ip", "127.0.0.2", "--egress-ip", "127.0.0.3", "--egress-probe", "127.0.0.9:80"}, edit: func(c *daemon.Config) {
			c.EgressIPs = []netip.Addr{ip("127.0.0.2"), ip("127.0.0.3")}
			c.EgressProbe = ap("127.0.0.9:80")
		}},
		{name: "egress allow loopback", args: []string{"--egress-allow-loopback"}, edit: func(c *daemon.Config) { c.EgressAllowLoopback = true }},
		{name: "gossip timing", args: []string{"--gossip-timing", "fast"}, edit: func(c *daemon.Config) { c.Timing = cluster.TimingFast }},
		{name: "debug listen", args: []string{"--debug-listen", "127.0.0.1:6060"}, edit: func(c *daemon.Config) { c.DebugListen = ap("127.0.0.1:6060") }},
		{name: "flow log", args: []string{"--flow-log", "/var/log/vrouter/flows.jsonl", "--flow-log-max-size", "5"}, edit: func(c *daemon.Config) {
			c.FlowLog, c.FlowLogMaxSize = "/var/log/vrouter/flows.jsonl", 5<<20
		}},
		{name: "egress deny, masked", args: []string{"--egress-deny", "100.100.100.200/32", "--egress-deny", "192.168.1.7/16"}, edit: func(c *daemon.Config) {
			c.EgressDeny = []netip.Prefix{netip.MustParsePrefix("100.100.100.200/32"), netip.MustParsePrefix("192.168.0.0/16")}
		}},
		{name: "egress budget", args: []string{"--egress-max-fds", "5000", "--egress-max-memory", "512"}, edit: func(c *daemon.Config) {
			c.EgressMaxFDs, c.EgressMaxMemory = 5000, 512<<20
		}},
		{name: "metrics listen, any address", args: []string{"--metrics-listen", "0.0.0.0:9469"}, edit: func(c *daemon.Config) { c.MetricsListen = ap("0.0.0.0:9469") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseRun(tt.args)
			if err != nil {
				t.Fatalf("parseRun(%q): %v", tt.args, err)
			}
			if got.OpenPort == nil {
				t.Error("no OpenPort")
			}
			if got.Logger == nil {
				t.Fatal("no Logger")
			}
			ctx := context.Background()
			if !got.Logger.Enabled(ctx, tt.level) || tt.level > slog.LevelDebug && got.Logger.Enabled(ctx, tt.level-1) {
				t.Errorf("logger does not log from level %v up", tt.level)
			}
			got.OpenPort, got.Logger = nil, nil
			want := defaultRun(t)
			tt.edit(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("parseRun(%q)\n got %+v\nwant %+v", tt.args, got, want)
			}
		})
	}
}

// TestParseRunRefuses: every bad value of run is a usage error (exit 2)
// with a one-line message naming the flag, before anything is created.
func TestParseRunRefuses(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"extra"}, `run takes no arguments, got ["extra"]`},
		{[]string{"--nope"}, "unknown flag: --nope"},
		{[]string{"--name", ""}, "--name: the node name is empty"},
		{[]string{"--state-dir", ""}, "--state-dir: the state directory is empty"},
		{[]string{"--mtu", "10"}, "--mtu 10: want 576-65535"},
		{[]string{"--mtu", "65536"}, "--mtu 65536: want 576-65535"},
		{[]string{"--mtu", "0"}, "--mtu 0: want 576-65535"},
		{[]string{"--mtu", "abc"}, `invalid argument "abc" for "--mtu" flag`},
		{[]string{"--log-level", "loud"}, `--log-level "loud": want debug, info, warn or error`},
		{[]string{"--gossip", "localhost:7946"}, `--gossip "localhost:7946": want IP:PORT`},
		{[]string{"--gossip", "127.0.0.1"}, `--gossip "127.0.0.1": want IP:PORT`},
		{[]string{"--gossip", "127.0.0.1:70000"}, `--gossip "127.0.0.1:70000": want IP:PORT`},
		{[]string{"--advertise", "node1"}, `--advertise "node1": want an IP address`},
		{[]string{"--join", "127.0.0.1"}, `--join "127.0.0.1": want ADDR:PORT`},
		{[]string{"--join", "node2:port"}, `--join "node2:port": want ADDR:PORT`},
		{[]string{"--listen", "51820"}, `--listen "51820": want IP:PORT`},
		{[]string{"--listen", "0.0.0.0:x"}, `--listen "0.0.0.0:x": want IP:PORT`},
		{[]string{"--dns-upstream", "resolver.example:53"}, `--dns-upstream "resolver.example:53": want IP:PORT`},
		{[]string{"--dns-upstream", "127.0.0.1:0"}, "--dns-upstream 127.0.0.1:0: want IP:PORT with a port other than 0"},
		{[]string{"--egress-ip", "::1"}, `--egress-ip "::1": want an IPv4 address`},
		{[]string{"--egress-ip", "banana"}, `--egress-ip "banana": want an IPv4 address`},
		{[]string{"--egress-ip", "127.0.0.2", "--egress-ip", "127.0.0.2"}, "--egress-ip 127.0.0.2 given twice"},
		{[]string{"--egress-probe", "127.0.0.9"}, `--egress-probe "127.0.0.9": want IP:PORT`},
		{[]string{"--egress-deny", "192.168.0.1"}, `--egress-deny "192.168.0.1": want an IPv4 CIDR`},
		{[]string{"--egress-deny", "fd00::/8"}, `--egress-deny "fd00::/8": want an IPv4 CIDR`},
		{[]string{"--egress-max-fds", "-1"}, "--egress-max-fds -1: want a positive number (0: derived from RLIMIT_NOFILE)"},
		{[]string{"--egress-max-memory", "-2"}, "--egress-max-memory -2: want a positive number of MiB (0: derived from the host's memory)"},
		{[]string{"--egress-max-memory", "9999999999999"}, "--egress-max-memory 9999999999999: more MiB than any host has"},
		{[]string{"--egress-probe", "127.0.0.9:80"}, "--egress-probe needs egress IPs (--egress-ip): only gateways probe"},
		{[]string{"--gossip-timing", "slow"}, `--gossip-timing "slow": want lan or fast`},
		{[]string{"--debug-listen", "127.0.0.1"}, `--debug-listen "127.0.0.1": want IP:PORT`},
		{[]string{"--metrics-listen", "localhost:9469"}, `--metrics-listen "localhost:9469": want IP:PORT`},
		{[]string{"--flow-log", "-", "--flow-log-max-size", "0"}, "--flow-log-max-size 0: want at least 1 (MiB)"},
		{[]string{"--debug-listen", "0.0.0.0:6060"}, "--debug-listen 0.0.0.0:6060: must be a loopback address"},
	}
	var cli []badInput
	for _, tt := range tests {
		_, err := parseRun(tt.args)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("parseRun(%q) = %v; want a usage error containing %q", tt.args, err, tt.want)
		}
		cli = append(cli, badInput{strings.Join(tt.args, " "), append([]string{"run"}, tt.args...), exitUsage, tt.want})
	}
	checkBadInput(t, cli)
}

func TestRunHelp(t *testing.T) {
	var stdout, stderr strings.Builder
	if code := run([]string{"run", "--help"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("run --help exit %d, stderr %q", code, stderr.String())
	}
	for _, f := range []string{"--gossip", "--listen", "--dns-upstream", "--debug-listen", "0.0.0.0:51820"} {
		if !strings.Contains(stdout.String(), f) {
			t.Errorf("run --help lacks %q:\n%s", f, stdout.String())
		}
	}
}

// TestRunDefaultStateDir: without --state-dir the state (and the socket)
// go to an absolute directory of the user, never the working directory.
func TestRunDefaultStateDir(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "/srv/vr")
	cfg, err := parseRun(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StateDir != "/srv/vr" || cfg.Control != "/srv/vr/control.sock" {
		t.Errorf("under systemd: state dir %q, control %q", cfg.StateDir, cfg.Control)
	}
	t.Setenv("STATE_DIRECTORY", "")
	t.Setenv("XDG_STATE_HOME", "/xdg")
	t.Setenv("HOME", "/home/u")
	cfg, err = parseRun(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "/xdg/vrouter"
	if os.Geteuid() == 0 {
		want = "/var/lib/vrouter"
	}
	if cfg.StateDir != want || cfg.Control != want+"/control.sock" {
		t.Errorf("state dir %q, control %q; want %q", cfg.StateDir, cfg.Control, want)
	}
	// An explicit one is used as given, a relative one taken from the
	// working directory.
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if cfg, err := parseRun([]string{"--state-dir", "rel"}); err != nil || cfg.StateDir != filepath.Join(cwd, "rel") {
		t.Errorf("an explicit --state-dir: %q, %v", cfg.StateDir, err)
	}
}
