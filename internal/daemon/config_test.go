package daemon

import (
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vrouter/vrouter/cluster"
	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/router"
)

func TestConfigValidate(t *testing.T) {
	ap := netip.MustParseAddrPort
	ip := netip.MustParseAddr
	valid := func() Config {
		return Config{
			Name: "n1", StateDir: "s", Control: "s/control.sock", MTU: 1390, OpenPort: (&fakePorts{}).open,
			Gossip: ap("0.0.0.0:7946"), Listen: ap("0.0.0.0:51820"), Timing: cluster.TimingLAN,
		}
	}
	tests := []struct {
		name string
		edit func(*Config)
		err  string // "" = valid
	}{
		{"valid", func(*Config) {}, ""},
		{"a full gateway", func(c *Config) {
			c.Advertise = ip("192.0.2.1")
			c.Join = []string{"127.0.0.1:7946", "node2:7946", "[::1]:7946"}
			c.DNSUpstreams = []netip.AddrPort{ap("127.0.0.1:53"), ap("[::1]:5353")}
			c.EgressIPs = []netip.Addr{ip("127.0.0.2"), ip("127.0.0.3")}
			c.EgressProbe = ap("127.0.0.9:80")
			c.DebugListen = ap("[::1]:6060")
			c.Timing = cluster.TimingFast
		}, ""},
		{"mtu bounds", func(c *Config) { c.MTU = 65535 }, ""},
		{"no name", func(c *Config) { c.Name = "" }, "--name: the node name is empty"},
		{"no state dir", func(c *Config) { c.StateDir = "" }, "--state-dir: the state directory is empty"},
		{"no control socket", func(c *Config) { c.Control = "" }, "--control: the control socket path is empty"},
		{"mtu too small", func(c *Config) { c.MTU = 575 }, "--mtu 575: want 576-65535"},
		{"mtu too big", func(c *Config) { c.MTU = 65536 }, "--mtu 65536: want 576-65535"},
		{"no port opener", func(c *Config) { c.OpenPort = nil }, "no port opener configured"},
		{"no gossip address", func(c *Config) { c.Gossip = netip.AddrPort{} }, "--gossip: no address"},
		{"no listen address", func(c *Config) { c.Listen = netip.AddrPort{} }, "--listen: no address"},
		{"unknown timing", func(c *Config) { c.Timing = 7 }, "--gossip-timing 7: want lan or fast"},
		{"join without port", func(c *Config) { c.Join = []string{"node2"} }, `--join "node2": want ADDR:PORT`},
		{"join bad port", func(c *Config) { c.Join = []string{"node2:99999"} }, `--join "node2:99999": want ADDR:PORT`},
		{"upstream port 0", func(c *Config) { c.DNSUpstreams = []netip.AddrPort{ap("127.0.0.1:0")} }, "--dns-upstream 127.0.0.1:0: want IP:PORT"},
		{"upstream zero", func(c *Config) { c.DNSUpstreams = []netip.AddrPort{{}} }, "--dns-upstream"},
		{"egress ip v6", func(c *Config) { c.EgressIPs = []netip.Addr{ip("::1")} }, "--egress-ip ::1: not an IPv4 address"},
		{"egress ip twice", func(c *Config) { c.EgressIPs = []netip.Addr{ip("127.0.0.2"), ip("127.0.0.2")} }, "--egress-ip 127.0.0.2 given twice"},
		{"probe without egress ips", func(c *Config) { c.EgressProbe = ap("127.0.0.9:80") }, "--egress-probe needs egress IPs"},
		{"debug not loopback", func(c *Config) { c.DebugListen = ap("0.0.0.0:6060") }, "--debug-listen 0.0.0.0:6060: must be a loopback address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.edit(&c)
			err := c.Validate()
			if tt.err == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.err)
			}
		})
	}
}

// TestConfigDefaults: New fills in the zero values that tests rely on,
// and validates the result (a zero MTU is the default, not an error).
func TestConfigDefaults(t *testing.T) {
	c := Config{Name: "n", StateDir: "s", OpenPort: (&fakePorts{}).open}.withDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if c.Logger == nil || c.MTU != router.DefaultMTU || c.Control != "s/control.sock" ||
		c.Gossip != netip.MustParseAddrPort("127.0.0.1:0") || c.Listen != netip.MustParseAddrPort("0.0.0.0:0") {
		t.Fatalf("withDefaults() = %+v", c)
	}
	set := Config{Control: "c", MTU: 9000, Gossip: netip.MustParseAddrPort("127.0.0.2:1"), Listen: netip.MustParseAddrPort("127.0.0.1:2")}
	if got := set.withDefaults(); got.Control != "c" || got.MTU != 9000 || got.Gossip != set.Gossip || got.Listen != set.Listen {
		t.Fatalf("withDefaults() changed given values: %+v", got)
	}
	if _, err := New(Config{StateDir: t.TempDir(), OpenPort: (&fakePorts{}).open}); err == nil || !strings.Contains(err.Error(), "--name") {
		t.Fatalf("New without a name: %v", err)
	}
}

// TestNewUnwinds: when a step of New fails after others succeeded, what
// they built is closed again: no goroutine is left, the control socket
// is gone, and the same configuration then starts.
func TestNewUnwinds(t *testing.T) {
	leaktest.Check(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	sock := filepath.Join(dir, "c.sock")
	base := func() Config {
		return Config{Name: "n", StateDir: filepath.Join(dir, "state"), Control: sock, OpenPort: (&fakePorts{}).open}
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		// Fails in newCluster: the socket, router and WireGuard exist.
		{"missing cluster key", func(c *Config) { c.ClusterKeyFile = filepath.Join(dir, "none.key") }, "cluster key"},
		// Fails last: the resolver and gossip exist too.
		{"debug address in use", func(c *Config) { c.DebugListen = netip.MustParseAddrPort(busy.Addr().String()) }, "debug listener"},
	} {
		c := base()
		tc.edit(&c)
		if _, err := New(c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: New = %v, want an error containing %q", tc.name, err, tc.want)
		}
		if _, err := os.Stat(sock); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: control socket left behind (%v)", tc.name, err)
		}
	}
	d, err := New(base())
	if err != nil {
		t.Fatalf("New after failed starts: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}
