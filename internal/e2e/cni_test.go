//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// The CNI plugin is driven here the way runtimes drive it, through libcni,
// against a real daemon running as nobody. The plugin itself runs as root,
// as a runtime's plugins do.

// cniPluginDir is the directory holding vrouter-cni: beside the vrouter
// binary under test (make build puts both in bin/).
func cniPluginDir(t *testing.T) string {
	t.Helper()
	src, err := binaryPath()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(src)
	if _, err := os.Stat(filepath.Join(dir, "vrouter-cni")); err != nil {
		t.Fatalf("CNI plugin beside %s (run make build): %v", src, err)
	}
	return dir
}

// cniEnv is a libcni client with a cache dir and a plugin data dir of the
// test's own, so that nothing outlives it.
type cniEnv struct {
	cfg     *libcni.CNIConfig
	dataDir string
}

func newCNIEnv(t *testing.T) *cniEnv {
	t.Helper()
	dir := t.TempDir()
	return &cniEnv{
		cfg:     libcni.NewCNIConfigWithCacheDir([]string{cniPluginDir(t)}, filepath.Join(dir, "cache"), nil),
		dataDir: filepath.Join(dir, "data"),
	}
}

// confList builds a one-plugin configuration list. extra adds or replaces
// keys of the plugin's object.
func (e *cniEnv) confList(t *testing.T, version, name, sock, network string, extra map[string]any) *libcni.NetworkConfigList {
	t.Helper()
	plugin := map[string]any{"type": "vrouter-cni", "network": network, "control": sock, "dataDir": e.dataDir}
	for k, v := range extra {
		if v == nil {
			delete(plugin, k)
			continue
		}
		plugin[k] = v
	}
	b, err := json.Marshal(map[string]any{"cniVersion": version, "name": name, "plugins": []any{plugin}})
	if err != nil {
		t.Fatal(err)
	}
	l, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatalf("conflist %s: %v", b, err)
	}
	return l
}

func runtimeConf(id string, ns *netns, ifname string, args ...[2]string) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: id, IfName: ifname, Args: args}
	if ns != nil {
		rt.NetNS = ns.path
	}
	return rt
}

func appArgs(app, typ string) [][2]string {
	return [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", "ignored"}, {"APP", app}, {"TYPE", typ}}
}

// cniCode returns the code of a CNI error object, failing the test when err
// is not one.
func cniCode(t *testing.T, err error) uint {
	t.Helper()
	var te *types.Error
	if !errors.As(err, &te) {
		t.Fatalf("want a CNI error object, got %T: %v", err, err)
	}
	return te.Code
}

// onlyLinks fails unless the namespace's interfaces are exactly want.
func onlyLinks(t *testing.T, ns *netns, want ...string) {
	t.Helper()
	got := ns.linkNames(t)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("%s: interfaces %v, want %v", ns.name, got, want)
	}
}

// withDefaultRoute gives ns an interface eth0 with a default route, as an
// engine's bridge network would: a veth pair whose both ends stay in ns, so
// that nothing it sends leaves the namespace.
func withDefaultRoute(t *testing.T, ns *netns) {
	t.Helper()
	ns.mustRun(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
	ns.mustRun(t, "ip", "addr", "add", "192.168.77.2/24", "dev", "eth0")
	ns.mustRun(t, "ip", "link", "set", "eth0", "up")
	ns.mustRun(t, "ip", "link", "set", "eth0p", "up")
	ns.mustRun(t, "ip", "route", "add", "default", "via", "192.168.77.1")
}

// cniPorts lists the daemon's ports with their CNI attachment.
func cniPorts(t *testing.T, d *daemon) map[string]string {
	t.Helper()
	r := d.mustCLI(t, "containers", "--json")
	var cs []struct {
		ID  string `json:"id"`
		IP  string `json:"ip"`
		CNI *struct {
			ContainerID string `json:"container_id"`
			Network     string `json:"network"`
			IfName      string `json:"ifname"`
		} `json:"cni"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &cs); err != nil {
		t.Fatalf("containers --json: %v: %s", err, r.stdout)
	}
	out := make(map[string]string)
	for _, c := range cs {
		if c.CNI == nil {
			t.Fatalf("port %s has no cni attachment: %s", c.ID, r.stdout)
		}
		out[c.CNI.Network+"/"+c.CNI.ContainerID+"/"+c.CNI.IfName] = c.IP
	}
	return out
}

func addResult(t *testing.T, res types.Result) *current.Result {
	t.Helper()
	r, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatalf("result: %v", err)
	}
	return r
}

// TestCNIAddCheckDel: ADD gives two containers of a network a configured
// port (pn-only beside an existing default route, for one of them), they
// reach each other by the private names the result's search domains
// complete, CHECK passes and then notices a removed route, DEL removes the
// port and the interface and can be repeated.
func TestCNIAddCheckDel(t *testing.T) {
	need(t)
	d := startDaemon(t)
	e := newCNIEnv(t)
	ctx := context.Background()
	network, app := newID("pn"), newID("ap")
	list := e.confList(t, "1.0.0", "pn-test", d.sock, network, nil)

	a, b := newNetns(t), newNetns(t)
	// b already has a default route on another interface, as a container
	// of an engine's bridge network does.
	withDefaultRoute(t, b)

	rtA := runtimeConf("ctr-a", a, "pn0", appArgs(app, "web")...)
	resA, err := e.cfg.AddNetworkList(ctx, list, rtA)
	if err != nil {
		t.Fatalf("ADD a: %v", err)
	}
	// b gets its app and type from the configuration's args.cni, as a
	// runtime passing per-container args does.
	listB := e.confList(t, "1.0.0", "pn-test", d.sock, network, map[string]any{"args": map[string]any{"cni": map[string]any{"app": app, "type": "worker", "number": 3}}})
	rtB := runtimeConf("ctr-b", b, "pn0")
	resB, err := e.cfg.AddNetworkList(ctx, listB, rtB)
	if err != nil {
		t.Fatalf("ADD b: %v", err)
	}
	ra, rb := addResult(t, resA), addResult(t, resB)
	for _, r := range []*current.Result{ra, rb} {
		if len(r.Interfaces) != 1 || r.Interfaces[0].Name != "pn0" || r.Interfaces[0].Sandbox == "" {
			t.Fatalf("result interfaces %+v", r.Interfaces)
		}
		if len(r.IPs) != 1 || r.IPs[0].Interface == nil || *r.IPs[0].Interface != 0 {
			t.Fatalf("result ips %+v", r.IPs)
		}
		if ones, _ := r.IPs[0].Address.Mask.Size(); ones != privatePrefix || !inPrivateRange(mustAddr(t, r.IPs[0].Address.IP.String())) {
			t.Fatalf("result address %v", r.IPs[0].Address)
		}
		wantSearch := []string{app + "." + network + ".private-network.internal", network + ".private-network.internal"}
		if !slices.Equal(r.DNS.Nameservers, []string{resolverAddr}) || !slices.Equal(r.DNS.Search, wantSearch) {
			t.Fatalf("result dns %+v, want nameserver %s search %v", r.DNS, resolverAddr, wantSearch)
		}
		for _, rt := range r.Routes {
			if ones, _ := rt.Dst.Mask.Size(); ones == 0 {
				t.Fatalf("pn-only result has a default route: %+v", r.Routes)
			}
		}
	}
	ipA, ipB := ra.IPs[0].Address.IP.String(), rb.IPs[0].Address.IP.String()

	// pn-only: b keeps its default route on eth0; the private range and the
	// resolver go through pn0.
	routes := map[string]string{}
	for _, r := range b.routes(t) {
		routes[r.Dst] = r.Dev
	}
	if routes["default"] != "eth0" || routes["10.240.0.0/22"] != "pn0" || routes[resolverAddr] != "pn0" {
		t.Fatalf("b's routes %v: want default on eth0, 10.240.0.0/22 and %s on pn0", routes, resolverAddr)
	}
	if r, ok := a.link(t, "pn0"); !ok || r.MTU != defaultMTU || !r.up() {
		t.Fatalf("a's pn0: %+v (present %v)", r, ok)
	}

	// The names, completed by the search domains of the result.
	wantA(t, a, "3.worker."+ra.DNS.Search[0]+".", ipB)
	wantA(t, b, "web."+rb.DNS.Search[0]+".", ipA)
	wantA(t, b, app+"."+rb.DNS.Search[1]+".", ipA)
	a.mustRun(t, "ping", "-c", "1", "-W", "2", ipB)
	b.mustRun(t, "ping", "-c", "1", "-W", "2", ipA)

	if err := e.cfg.CheckNetworkList(ctx, list, rtA); err != nil {
		t.Fatalf("CHECK a: %v", err)
	}
	if err := e.cfg.CheckNetworkList(ctx, listB, rtB); err != nil {
		t.Fatalf("CHECK b: %v", err)
	}
	b.mustRun(t, "ip", "route", "del", resolverAddr+"/32", "dev", "pn0")
	err = e.cfg.CheckNetworkList(ctx, listB, rtB)
	if err == nil || !strings.Contains(err.Error(), resolverAddr) {
		t.Fatalf("CHECK b without its resolver route: %v, want an error naming %s", err, resolverAddr)
	}

	if got := cniPorts(t, d); len(got) != 2 || got["pn-test/ctr-a/pn0"] != ipA || got["pn-test/ctr-b/pn0"] != ipB {
		t.Fatalf("daemon ports %v", got)
	}
	for i := range 2 { // DEL twice: the second finds nothing and succeeds
		if err := e.cfg.DelNetworkList(ctx, list, rtA); err != nil {
			t.Fatalf("DEL a (%d): %v", i+1, err)
		}
	}
	onlyLinks(t, a, "lo")
	if got := cniPorts(t, d); len(got) != 1 || got["pn-test/ctr-b/pn0"] != ipB {
		t.Fatalf("after DEL a, daemon ports %v", got)
	}
	err = e.cfg.CheckNetworkList(ctx, list, rtA)
	if err == nil {
		t.Fatal("CHECK of a deleted container passed")
	}
	if err := e.cfg.DelNetworkList(ctx, listB, rtB); err != nil {
		t.Fatalf("DEL b: %v", err)
	}
	onlyLinks(t, b, "lo", "eth0", "eth0p")
	if got := cniPorts(t, d); len(got) != 0 {
		t.Fatalf("after DEL b, daemon ports %v", got)
	}
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestCNIFullModeAndOldSpec: a 0.4.0 configuration in full mode gets a
// 0.4.0 result with the default route through the port; CHECK works on it.
func TestCNIFullModeAndOldSpec(t *testing.T) {
	need(t)
	d := startDaemon(t)
	e := newCNIEnv(t)
	ctx := context.Background()
	list := e.confList(t, "0.4.0", "pn-full", d.sock, newID("pn"), map[string]any{"mode": "full", "mtu": 1280})
	ns := newNetns(t)
	rt := runtimeConf("ctr-full", ns, "eth0", appArgs(newID("ap"), "web")...)
	res, err := e.cfg.AddNetworkList(ctx, list, rt)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if res.Version() != "0.4.0" {
		t.Fatalf("result version %s, want 0.4.0", res.Version())
	}
	routes := map[string]string{}
	for _, r := range ns.routes(t) {
		routes[r.Dst] = r.Dev
	}
	if routes["default"] != "eth0" {
		t.Fatalf("full mode routes %v: want the default route on eth0", routes)
	}
	if l, ok := ns.link(t, "eth0"); !ok || l.MTU != 1280 {
		t.Fatalf("eth0 %+v: want MTU 1280 from the configuration", l)
	}
	if err := e.cfg.CheckNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if err := e.cfg.DelNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	onlyLinks(t, ns, "lo")
}

// TestCNIBadInput: each bad input gives a CNI error object with the
// spec's code and a message naming the problem, and leaves nothing in the
// namespace or the daemon.
func TestCNIBadInput(t *testing.T) {
	need(t)
	d := startDaemon(t)
	e := newCNIEnv(t)
	ctx := context.Background()
	network, app := newID("pn"), newID("ap")
	ns := newNetns(t)
	withDefaultRoute(t, ns)
	good := appArgs(app, "web")
	// A socket in a directory anybody may write to: whoever listens there
	// could be anybody. It never answers; the plugin must not connect.
	untrusted := filepath.Join(t.TempDir(), "open", "control.sock")
	if err := os.Mkdir(filepath.Dir(untrusted), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(untrusted), 0o777); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unixpacket", untrusted)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cases := []struct {
		name  string
		list  func() *libcni.NetworkConfigList
		rt    *libcni.RuntimeConf
		code  uint
		wants string
	}{
		{"no network", func() *libcni.NetworkConfigList {
			return e.confList(t, "1.0.0", "bad", d.sock, "", map[string]any{"network": nil})
		}, runtimeConf("c1", ns, "pn0", good...), types.ErrInvalidNetworkConfig, `no "network"`},
		{"malformed network id", func() *libcni.NetworkConfigList {
			return e.confList(t, "1.0.0", "bad", d.sock, "pn-nope", nil)
		}, runtimeConf("c1", ns, "pn0", good...), types.ErrInvalidNetworkConfig, "pn-nope"},
		{"network of the wrong type", func() *libcni.NetworkConfigList {
			return e.confList(t, "1.0.0", "bad", d.sock, network, map[string]any{"network": 42})
		}, runtimeConf("c1", ns, "pn0", good...), types.ErrDecodingFailure, "malformed network configuration"},
		{"bad mode", func() *libcni.NetworkConfigList {
			return e.confList(t, "1.0.0", "bad", d.sock, network, map[string]any{"mode": "bridge"})
		}, runtimeConf("c1", ns, "pn0", good...), types.ErrInvalidNetworkConfig, `mode "bridge"`},
		{"no control socket key", func() *libcni.NetworkConfigList {
			return e.confList(t, "1.0.0", "bad", "", network, map[string]any{"control": nil})
		}, runtimeConf("c1", ns, "pn0", good...), types.ErrInvalidNetworkConfig, `no "control"`},
		{"missing app", func() *libcni.NetworkConfigList {
			return e.confList(t, "1.0.0", "bad", d.sock, network, nil)
		}, runtimeConf("c1", ns, "pn0", [2]string{"TYPE", "web"}), types.ErrInvalidNetworkConfig, "no app"},
		{"malformed app", func() *libcni.NetworkConfigList {
			return e.confList(t, "1.0.0", "bad", d.sock, network, nil)
		}, runtimeConf("c1", ns, "pn0", [2]string{"APP", "ap-1"}, [2]string{"TYPE", "web"}), types.ErrInvalidNetworkConfig, "ap-1"},
		{"bad number", func() *libcni.NetworkConfigList {
			return e.confList(t, "1.0.0", "bad", d.sock, network, nil)
		}, runtimeConf("c1", ns, "pn0", append(good, [2]string{"NUMBER", "zero"})...), types.ErrInvalidNetworkConfig, `number "zero"`},
		{"daemon absent", func() *libcni.NetworkConfigList {
			return e.confList(t, "1.0.0", "bad", filepath.Join(d.dir, "absent.sock"), network, nil)
		}, runtimeConf("c1", ns, "pn0", good...), types.ErrTryAgainLater, "absent.sock"},
		{"relative control socket", func() *libcni.NetworkConfigList {
			return e.confList(t, "1.0.0", "bad", "run/control.sock", network, nil)
		}, runtimeConf("c1", ns, "pn0", good...), types.ErrInvalidNetworkConfig, "relative path"},
		{"untrusted control socket", func() *libcni.NetworkConfigList {
			return e.confList(t, "1.0.0", "bad", untrusted, network, nil)
		}, runtimeConf("c1", ns, "pn0", good...), types.ErrInvalidNetworkConfig, "others may write"},
		{"mtu above the daemon's", func() *libcni.NetworkConfigList {
			return e.confList(t, "1.0.0", "bad", d.sock, network, map[string]any{"mtu": 9000})
		}, runtimeConf("c1", ns, "pn0", good...), types.ErrInvalidNetworkConfig, "9000"},
		{"full mode beside a default route", func() *libcni.NetworkConfigList {
			return e.confList(t, "1.0.0", "bad", d.sock, network, map[string]any{"mode": "full"})
		}, runtimeConf("c1", ns, "pn0", good...), types.ErrInvalidNetNS, "default route"},
		{"interface name taken", func() *libcni.NetworkConfigList {
			return e.confList(t, "1.0.0", "bad", d.sock, network, nil)
		}, runtimeConf("c1", ns, "eth0", good...), types.ErrInternal, "already exists"},
		{"namespace gone", func() *libcni.NetworkConfigList {
			return e.confList(t, "1.0.0", "bad", d.sock, network, nil)
		}, &libcni.RuntimeConf{ContainerID: "c1", NetNS: "/run/netns/vre2e-" + runID + "-absent", IfName: "pn0", Args: good}, types.ErrUnknownContainer, "does not exist"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.cfg.AddNetworkList(ctx, c.list(), c.rt)
			if err == nil {
				t.Fatal("ADD succeeded")
			}
			if code := cniCode(t, err); code != c.code {
				t.Errorf("code %d, want %d: %v", code, c.code, err)
			}
			if !strings.Contains(err.Error(), c.wants) {
				t.Errorf("message %q does not name %q", err, c.wants)
			}
			onlyLinks(t, ns, "lo", "eth0", "eth0p")
			if got := cniPorts(t, d); len(got) != 0 {
				t.Errorf("daemon holds ports %v", got)
			}
		})
	}
}

// TestCNIDelDaemonAway: a DEL while the daemon does not answer succeeds
// and queues the deletion; the next invocation that reaches the daemon
// (here STATUS) detaches the port.
func TestCNIDelDaemonAway(t *testing.T) {
	need(t)
	d := startDaemon(t)
	e := newCNIEnv(t)
	ctx := context.Background()
	list := e.confList(t, "1.1.0", "pn-away", d.sock, newID("pn"), nil)
	ns := newNetns(t)
	rt := runtimeConf("ctr-away", ns, "pn0", appArgs(newID("ap"), "web")...)
	if _, err := e.cfg.AddNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	// The daemon is alive but cannot be reached: its socket is elsewhere.
	hidden := d.sock + ".hidden"
	if err := os.Rename(d.sock, hidden); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := os.Rename(hidden, d.sock); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(restore)
	if err := e.cfg.GetStatusNetworkList(ctx, list); err == nil || cniCode(t, err) != types.ErrPluginNotAvailable {
		t.Fatalf("STATUS with the daemon away: %v, want code %d", err, types.ErrPluginNotAvailable)
	}
	// A runtime may pass no namespace on DEL (it is gone, or unknown):
	// then only the daemon can let the port go.
	noNS := runtimeConf("ctr-away", nil, "pn0")
	if err := e.cfg.DelNetworkList(ctx, list, noNS); err != nil {
		t.Fatalf("DEL with the daemon away: %v", err)
	}
	queued, _ := filepath.Glob(filepath.Join(e.dataDir, "pending-del", "*.json"))
	if len(queued) != 1 {
		t.Fatalf("queued deletions %v, want 1", queued)
	}
	restore()
	if got := cniPorts(t, d); len(got) != 1 {
		t.Fatalf("before the queue is applied, daemon ports %v, want the one port", got)
	}
	if err := e.cfg.GetStatusNetworkList(ctx, list); err != nil {
		t.Fatalf("STATUS: %v", err)
	}
	if got := cniPorts(t, d); len(got) != 0 {
		t.Fatalf("after STATUS applied the queue, daemon ports %v", got)
	}
	ns.waitLinkGone(t, "pn0", stopTimeout)
	if queued, _ := filepath.Glob(filepath.Join(e.dataDir, "pending-del", "*.json")); len(queued) != 0 {
		t.Fatalf("queue not emptied: %v", queued)
	}
	// With the daemon gone for good, DEL still succeeds.
	d.kill(t)
	if err := e.cfg.DelNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("DEL with the daemon dead: %v", err)
	}
}

// TestCNIGC: GC detaches the ports of its network configuration that are
// not in the runtime's valid list, and leaves other configurations' alone.
func TestCNIGC(t *testing.T) {
	need(t)
	d := startDaemon(t)
	e := newCNIEnv(t)
	ctx := context.Background()
	network, app := newID("pn"), newID("ap")
	list := e.confList(t, "1.1.0", "pn-gc", d.sock, network, nil)
	other := e.confList(t, "1.1.0", "pn-gc-other", d.sock, network, nil)
	var nss []*netns
	for i := range 3 {
		ns := newNetns(t)
		nss = append(nss, ns)
		l := list
		if i == 2 {
			l = other
		}
		if _, err := e.cfg.AddNetworkList(ctx, l, runtimeConf(fmt.Sprintf("ctr-%d", i), ns, "pn0", appArgs(app, "web")...)); err != nil {
			t.Fatalf("ADD %d: %v", i, err)
		}
	}
	if err := e.cfg.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "ctr-0", IfName: "pn0"}}}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	got := cniPorts(t, d)
	if _, ok := got["pn-gc/ctr-0/pn0"]; !ok || len(got) != 2 {
		t.Fatalf("after GC, ports %v: want ctr-0 and the other configuration's ctr-2", got)
	}
	if _, ok := got["pn-gc-other/ctr-2/pn0"]; !ok {
		t.Fatalf("GC removed another configuration's port: %v", got)
	}
	nss[1].waitLinkGone(t, "pn0", stopTimeout)
}
