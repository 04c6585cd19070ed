//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/poll"
)

// podman runs Debian's podman 4.3 with the CNI backend on a configuration,
// storage and CNI configuration directory of the test's own, image-free:
// every container's root is a busybox-static tree the test makes. podman
// and its CNI plugins run as root, the vrouter daemon as nobody.
type podman struct {
	dir    string
	cniDir string
	rootfs string
	env    []string
	bridge string // the bridge the test's bridge network uses
}

// podmanTools are what .ci/run installs for these tests.
var podmanTools = []string{"podman", "runc", "/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/bin/busybox"}

func newPodman(t *testing.T) *podman {
	t.Helper()
	need(t)
	for _, tool := range podmanTools {
		if _, err := exec.LookPath(tool); err != nil {
			if h.ci {
				t.Fatalf("CI=true and %s is missing: %v", tool, err)
			}
			t.Skipf("podman tests skipped: %s missing (apt-get install podman runc containernetworking-plugins busybox-static)", tool)
		}
	}
	dir, err := os.MkdirTemp("", "vre2e-podman-")
	if err != nil {
		t.Fatal(err)
	}
	p := &podman{
		dir:    dir,
		cniDir: filepath.Join(dir, "cni"),
		rootfs: filepath.Join(dir, "rootfs"),
		bridge: "vrbr" + runID,
	}
	t.Cleanup(func() { p.close(t) })
	for _, d := range []string{p.cniDir, filepath.Join(p.rootfs, "bin"), filepath.Join(p.rootfs, "etc"), filepath.Join(p.rootfs, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := copyFile("/bin/busybox", filepath.Join(p.rootfs, "bin", "busybox"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, applet := range []string{"sh", "sleep", "ping", "nc", "ip", "cat", "wc", "head", "nslookup"} {
		if err := os.Symlink("busybox", filepath.Join(p.rootfs, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	// runc, not crun: crun refuses this machine's hybrid cgroup layout.
	// cgroupfs: no systemd is needed. The ulimits stay within what a
	// test's root may raise.
	conf := fmt.Sprintf(`[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[network]
network_backend = "cni"
cni_plugin_dirs = ["/usr/lib/cni", %q]
network_config_dir = %q
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
`, cniPluginDir(t), p.cniDir)
	confPath := filepath.Join(dir, "containers.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p.env = append(os.Environ(), "CONTAINERS_CONF="+confPath)
	p.writeConfList(t, "bridge-test", map[string]any{
		"type": "bridge", "bridge": p.bridge,
		// No gateway on the host, no NAT: the bridge carries nothing off
		// the machine, yet the container has a default route through it.
		"isGateway": false, "ipMasq": false,
		"ipam": map[string]any{
			"type": "host-local", "dataDir": filepath.Join(dir, "ipam"),
			"ranges": [][]map[string]string{{{"subnet": "10.99.0.0/24", "gateway": "10.99.0.1"}}},
			"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
		},
	})
	return p
}

// pnNetwork writes a vrouter-cni network configuration name for network
// on the daemon at sock.
func (p *podman) pnNetwork(t *testing.T, name, sock, network string) {
	t.Helper()
	p.writeConfList(t, name, map[string]any{
		"type": "vrouter-cni", "network": network, "control": sock,
		"dataDir": filepath.Join(p.dir, "vrouter-cni"),
	})
}

func (p *podman) writeConfList(t *testing.T, name string, plugin map[string]any) {
	t.Helper()
	b, err := json.MarshalIndent(map[string]any{"cniVersion": "1.0.0", "name": name, "plugins": []any{plugin}}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p.cniDir, name+".conflist"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// cmd runs podman with the test's storage; cniArgs becomes CNI_ARGS, which
// podman hands to the plugins.
func (p *podman) cmd(cniArgs string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := []string{"--root", filepath.Join(p.dir, "root"), "--runroot", filepath.Join(p.dir, "run"),
		"--tmpdir", filepath.Join(p.dir, "tmp"), "--storage-driver", "vfs"}
	c := exec.CommandContext(ctx, "podman", append(base, args...)...)
	c.Env = append(p.env, "CNI_ARGS="+cniArgs)
	out, err := c.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (p *podman) mustRun(t *testing.T, cniArgs string, args ...string) string {
	t.Helper()
	out, err := p.cmd(cniArgs, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// start runs a container that sleeps, on the given networks.
func (p *podman) start(t *testing.T, name, cniArgs string, networks ...string) {
	t.Helper()
	args := []string{"run", "-d", "--name", name}
	for _, n := range networks {
		args = append(args, "--network", n)
	}
	p.mustRun(t, cniArgs, append(args, "--rootfs", p.rootfs, "/bin/sleep", "600")...)
}

func (p *podman) exec(name string, args ...string) (string, error) {
	return p.cmd("", append([]string{"exec", name}, args...)...)
}

func (p *podman) mustExec(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := p.exec(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// close removes every container (their DELs run), then what podman and the
// bridge plugin leave on the host.
func (p *podman) close(t *testing.T) {
	if out, err := p.cmd("", "rm", "-f", "-t", "0", "--all"); err != nil {
		t.Errorf("podman rm --all: %v: %s", err, out)
	}
	if _, err := os.Stat("/sys/class/net/" + p.bridge); err == nil {
		if out, err := exec.Command("ip", "link", "del", p.bridge).CombinedOutput(); err != nil {
			t.Errorf("ip link del %s: %v: %s", p.bridge, err, out)
		}
	}
	// podman's cleanup processes may still be writing into the storage
	// root for a moment after rm returns ("directory not empty").
	var err error
	if !poll.Within(10*time.Second, func() bool { err = os.RemoveAll(p.dir); return err == nil }) {
		t.Errorf("remove %s: %v", p.dir, err)
	}
}

// pnAddr is the container's address on its vrouter interface.
func (p *podman) pnAddr(t *testing.T, name string) (ifname, addr string) {
	t.Helper()
	for _, line := range strings.Split(p.mustExec(t, name, "ip", "-o", "-4", "addr", "show"), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[2] == "inet" && strings.HasPrefix(f[3], "10.240.") {
			return strings.TrimSuffix(f[1], ":"), strings.Split(f[3], "/")[0]
		}
	}
	t.Fatalf("%s has no 10.240.0.0/22 address", name)
	return "", ""
}

// pingFrom pings target (a name or an address) once from container name
// and returns the address that answered.
func (p *podman) pingFrom(name, target string) (string, error) {
	out, err := p.exec(name, "ping", "-c", "1", "-W", "2", target)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "PING "); ok {
			if i, j := strings.Index(rest, "("), strings.Index(rest, ")"); i >= 0 && j > i {
				return rest[i+1 : j], nil
			}
		}
	}
	return "", fmt.Errorf("ping %s from %s: no address in %q", target, name, out)
}

// TestPodman: podman's CNI backend runs vrouter-cni. Two containers of a
// network reach each other by their short private names (the search
// domains of the plugin's result) and move data over TCP; a container of
// another network reaches neither; a container with a bridge network
// first keeps its default route there and reaches the private network
// through vrouter; podman rm -f detaches the port.
func TestPodman(t *testing.T) {
	p := newPodman(t)
	d := startDaemon(t)
	network, other, app := newID("pn"), newID("pn"), newID("ap")
	p.pnNetwork(t, "pn-test", d.sock, network)
	p.pnNetwork(t, "pn-other", d.sock, other)
	web := "APP=" + app + ";TYPE=web"
	p.start(t, "web1", web+";NUMBER=1", "pn-test")
	p.start(t, "web2", web+";NUMBER=2", "pn-test")
	p.start(t, "stranger", "APP="+newID("ap")+";TYPE=web", "pn-other")
	p.start(t, "dual", "APP="+app+";TYPE=worker", "bridge-test", "pn-test")
	_, ip1 := p.pnAddr(t, "web1")
	_, ip2 := p.pnAddr(t, "web2")

	resolv := p.mustExec(t, "web1", "cat", "/etc/resolv.conf")
	if !strings.Contains(resolv, "nameserver "+resolverAddr) || !strings.Contains(resolv, app+"."+network+".private-network.internal") {
		t.Fatalf("web1's resolv.conf lacks the plugin's resolver and search domains:\n%s", resolv)
	}
	for _, c := range []struct{ from, to, want string }{{"web1", "2.web", ip2}, {"web2", "1.web", ip1}, {"dual", "1.web", ip1}, {"web1", "worker." + app, ""}} {
		got, err := p.pingFrom(c.from, c.to)
		if err != nil {
			t.Fatalf("%s → %s: %v", c.from, c.to, err)
		}
		if c.want != "" && got != c.want {
			t.Fatalf("%s → %s answered from %s, want %s", c.from, c.to, got, c.want)
		}
	}

	// TCP: 200 kB from web1 to web2, by name.
	const size = 200000
	// busybox nc ends the connection when its stdin ends: the server's
	// stays open.
	p.mustRun(t, "", "exec", "-d", "web2", "sh", "-c", "sleep 60 | nc -l -p 5400 > /tmp/got")
	var sent string
	var err error
	for range 20 { // until web2's listener is up
		if sent, err = p.exec("web1", "sh", "-c", fmt.Sprintf("head -c %d /dev/zero | nc -w 3 2.web 5400", size)); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("TCP web1 → web2: %v %s", err, sent)
	}
	var got string
	for range 50 {
		got = strings.TrimSpace(p.mustExec(t, "web2", "wc", "-c", "/tmp/got"))
		if strings.HasPrefix(got, fmt.Sprint(size)+" ") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.HasPrefix(got, fmt.Sprint(size)+" ") {
		t.Fatalf("web2 received %q, want %d bytes", got, size)
	}

	// Another network: neither its names nor its addresses lead there.
	if _, err := p.pingFrom("stranger", ip2); err == nil {
		t.Fatalf("a container of another network reached %s", ip2)
	}
	if a, err := p.pingFrom("stranger", "2.web."+app+"."+network+".private-network.internal"); err == nil {
		t.Fatalf("a container of another network resolved and reached web2 (%s)", a)
	}

	// Two networks: the bridge's default route stays, the private range
	// and the resolver go through vrouter.
	pnIf, _ := p.pnAddr(t, "dual")
	routes := map[string]string{}
	for _, line := range strings.Split(p.mustExec(t, "dual", "ip", "-4", "route", "show"), "\n") {
		if f := strings.Fields(line); len(f) >= 3 {
			for i := range f[:len(f)-1] {
				if f[i] == "dev" {
					routes[f[0]] = f[i+1]
				}
			}
		}
	}
	if routes["default"] == "" || routes["default"] == pnIf || routes["10.240.0.0/22"] != pnIf || routes[resolverAddr] != pnIf {
		t.Fatalf("dual's routes %v: want the default on the bridge's interface, 10.240.0.0/22 and %s on %s", routes, resolverAddr, pnIf)
	}

	// podman rm -f runs DEL: the daemon lets the port go.
	p.mustRun(t, "", "rm", "-f", "-t", "0", "web2")
	for _, c := range d.containers(t) {
		if c.Network == network && c.IP == ip2 {
			t.Fatalf("after podman rm -f web2, the daemon still lists it: %+v", c)
		}
	}
	if n := len(d.containers(t)); n != 3 {
		t.Fatalf("after podman rm -f web2: %d ports, want 3", n)
	}
	p.mustRun(t, "", "rm", "-f", "-t", "0", "--all")
	if cs := d.containers(t); len(cs) != 0 {
		t.Fatalf("after podman rm --all: ports %+v", cs)
	}
}

// TestPodmanTwoNodes: one podman, two vrouter daemons in a cluster on
// loopback, a network configuration for each daemon on the same private
// network: a container on node A reaches one on node B by name.
func TestPodmanTwoNodes(t *testing.T) {
	p := newPodman(t)
	keyFile := newClusterKey(t)
	n1, p1 := startNode(t, "n1", keyFile, "")
	n2, _ := startNode(t, "n2", keyFile, fmt.Sprintf("127.0.0.1:%d", p1))
	poll.UntilNil(t, 15*time.Second, "both nodes alive on both", func() error {
		for _, d := range []*daemon{n1, n2} {
			if st := d.peerStates(t); st["n1"] != "alive" || st["n2"] != "alive" {
				return fmt.Errorf("peers %v", st)
			}
		}
		return nil
	})
	network, app := newID("pn"), newID("ap")
	p.pnNetwork(t, "pn-node1", n1.sock, network)
	p.pnNetwork(t, "pn-node2", n2.sock, network)
	p.start(t, "on1", "APP="+app+";TYPE=web;NUMBER=1", "pn-node1")
	p.start(t, "on2", "APP="+app+";TYPE=web;NUMBER=2", "pn-node2")
	_, ip2 := p.pnAddr(t, "on2")
	_, ip1 := p.pnAddr(t, "on1")
	if ip1 == ip2 {
		t.Fatalf("both containers got %s", ip1)
	}
	// The record of the other node's container arrives by gossip, the
	// WireGuard session on the first packets.
	poll.UntilNil(t, 15*time.Second, "on1 → 2.web on node 2", func() error {
		got, err := p.pingFrom("on1", "2.web")
		if err == nil && got != ip2 {
			return fmt.Errorf("2.web answered from %s, want %s", got, ip2)
		}
		return err
	})
	if got, err := p.pingFrom("on2", "1.web"); err != nil || got != ip1 {
		t.Fatalf("on2 → 1.web on node 1: %s %v, want %s", got, err, ip1)
	}
	if c := n1.containerIPs(t); c[network+"/"+ip2] != "n2" || c[network+"/"+ip1] != "n1" {
		t.Fatalf("node 1 sees %v", c)
	}
}
