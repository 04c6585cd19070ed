package tunnel

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/leaktest"
	"github.com/vrouter/vrouter/router"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// These tests need root (they make network namespaces). They skip when not
// root, except under CI=true, where a skip would hide the only real-kernel
// coverage of this package.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true but not root: the netns tests must run as root in CI")
	}
	t.Skip("needs root (network namespaces)")
}

func randHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// newNetns makes a named namespace that is deleted when the test ends,
// whether it passed or not, and returns its name and path.
func newNetns(t *testing.T) (name, path string) {
	t.Helper()
	name = "vrtest-" + randHex(t, 4)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	return name, "/run/netns/" + name
}

func ipJSON(t *testing.T, ns string, args ...string) []map[string]any {
	t.Helper()
	full := append([]string{"-n", ns, "-j"}, args...)
	out, err := exec.Command("ip", full...).Output()
	if err != nil {
		t.Fatalf("ip %s: %v", strings.Join(full, " "), err)
	}
	var v []map[string]any
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(full, " "), err, out)
	}
	return v
}

func linkExists(ns, name string) bool {
	args := []string{"link", "show", "dev", name}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	return exec.Command("ip", args...).Run() == nil
}

func waitLinkGone(t *testing.T, ns, name string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for linkExists(ns, name) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still exists in %s", name, ns)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var testCfg = IfaceConfig{
	Addr:         netip.MustParsePrefix("10.240.0.1/22"),
	MTU:          1390,
	DefaultRoute: true,
	Routes:       []netip.Prefix{netip.MustParsePrefix("169.254.20.10/32")},
}

func TestCreateConfigurePing(t *testing.T) {
	requireRoot(t)
	leaktest.Check(t)
	ns, nsPath := newNetns(t)
	name := "vrt" + randHex(t, 3)

	f, err := CreateInNetns(nsPath, name)
	if err != nil {
		t.Fatalf("CreateInNetns: %v", err)
	}
	defer f.Close()
	if !linkExists(ns, name) {
		t.Fatalf("%s not in %s", name, ns)
	}
	if linkExists("", name) {
		t.Fatalf("%s leaked into the test's own namespace", name)
	}
	info, err := Inspect(f)
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if info.Name != name || !info.VnetHdr {
		t.Fatalf("Inspect = %+v", info)
	}
	wantID, err := NetnsID(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DevNetnsID(f); err != nil || got != wantID {
		t.Fatalf("DevNetnsID = %q, %v; want %q", got, err, wantID)
	}
	if self, _ := NetnsID("/proc/self/ns/net"); self == wantID {
		t.Fatal("the new namespace has the id of our own")
	}

	if err := Preflight(nsPath, testCfg); err != nil {
		t.Fatalf("Preflight before Configure: %v", err)
	}
	if err := Configure(nsPath, name, testCfg); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	checkConfigured(t, ns, name)
	if err := Preflight(nsPath, testCfg); err == nil || !strings.Contains(err.Error(), "default route") {
		t.Fatalf("Preflight with a default route: %v", err)
	}
	noDefault := testCfg
	noDefault.DefaultRoute = false
	if err := Preflight(nsPath, noDefault); err != nil {
		t.Fatalf("Preflight without DefaultRoute: %v", err)
	}
	// A second default route is refused, not replaced.
	if err := Configure(nsPath, name, testCfg); err == nil || !strings.Contains(err.Error(), "default route") {
		t.Fatalf("second Configure: %v", err)
	}
	if err := Configure(nsPath, "nosuch0", testCfg); err == nil {
		t.Fatal("Configure of a missing interface succeeded")
	}

	p, pinfo, err := OpenPort(f, testCfg.MTU)
	if err != nil {
		t.Fatalf("OpenPort: %v", err)
	}
	if _, ok := p.(router.OffloadPort); pinfo != info || !ok {
		t.Fatalf("OpenPort info %+v port %T", pinfo, p)
	}
	pingThroughPort(t, ns, p)

	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	waitLinkGone(t, ns, name)
}

func checkConfigured(t *testing.T, ns, name string) {
	t.Helper()
	links := ipJSON(t, ns, "addr", "show", "dev", name)
	if len(links) != 1 {
		t.Fatalf("addr show: %v", links)
	}
	l := links[0]
	if mtu, _ := l["mtu"].(float64); int(mtu) != testCfg.MTU {
		t.Errorf("mtu = %v, want %d", l["mtu"], testCfg.MTU)
	}
	if flags := fmt.Sprint(l["flags"]); !strings.Contains(flags, "UP") {
		t.Errorf("flags = %s, want UP", flags)
	}
	var addrs []string
	for _, a := range l["addr_info"].([]any) {
		a := a.(map[string]any)
		addrs = append(addrs, fmt.Sprintf("%v/%v", a["local"], a["prefixlen"]))
	}
	if len(addrs) != 1 || addrs[0] != "10.240.0.1/22" {
		t.Errorf("addresses = %v, want only 10.240.0.1/22 (no IPv6 link-local)", addrs)
	}
	routes := map[string]string{}
	for _, r := range ipJSON(t, ns, "route", "show") {
		routes[fmt.Sprint(r["dst"])] = fmt.Sprint(r["dev"])
	}
	for _, dst := range []string{"default", "169.254.20.10", "10.240.0.0/22"} {
		if routes[dst] != name {
			t.Errorf("route %s via %q, want dev %s (routes %v)", dst, routes[dst], name, routes)
		}
	}
	lo := ipJSON(t, ns, "link", "show", "dev", "lo")
	if flags := fmt.Sprint(lo[0]["flags"]); !strings.Contains(flags, "UP") {
		t.Errorf("lo flags = %s, want UP", flags)
	}
}

// pingThroughPort runs ping in the namespace to an address routed into the
// TUN, answers the echo request through p and checks ping succeeds.
func pingThroughPort(t *testing.T, ns string, p router.Port) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ping := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "ping", "-c1", "-W5", "10.240.0.9")
	out := &strings.Builder{}
	ping.Stdout, ping.Stderr = out, out
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	if err := answerOnePing(ctx, p, netip.MustParseAddr("10.240.0.9")); err != nil {
		ping.Process.Kill()
		ping.Wait()
		t.Fatalf("answer ping: %v\nping output: %s", err, out)
	}
	if err := ping.Wait(); err != nil {
		t.Fatalf("ping failed: %v\n%s", err, out)
	}
}

// answerOnePing reads p until an ICMP echo request to dst arrives and writes
// the echo reply back. It gives up when ctx ends; it does not close p.
func answerOnePing(ctx context.Context, p router.Port, dst netip.Addr) error {
	type pkt struct {
		b   []byte
		err error
	}
	bufs := make([][]byte, p.BatchSize())
	for i := range bufs {
		bufs[i] = make([]byte, router.Headroom+65535)
	}
	sizes := make([]int, len(bufs))
	for {
		// Read blocks; run it aside so ctx can end the wait. The caller's
		// Close of p ends a read left behind.
		done := make(chan pkt, 1)
		go func() {
			n, err := p.Read(bufs, sizes, router.Headroom)
			for i := range n {
				b := bufs[i][router.Headroom : router.Headroom+sizes[i]]
				if isEchoRequestTo(b, dst) {
					done <- pkt{b: append([]byte(nil), b...)}
					return
				}
			}
			done <- pkt{err: err}
		}()
		var r pkt
		select {
		case <-ctx.Done():
			return ctx.Err()
		case r = <-done:
		}
		if r.err != nil {
			return fmt.Errorf("read: %w", r.err)
		}
		if r.b == nil {
			continue // something else (e.g. IPv6 noise): keep reading
		}
		reply := make([]byte, router.Headroom+len(r.b))
		copy(reply[router.Headroom:], r.b)
		makeEchoReply(reply[router.Headroom:])
		if _, err := p.Write([][]byte{reply}, router.Headroom); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		return nil
	}
}

func isEchoRequestTo(b []byte, dst netip.Addr) bool {
	if len(b) < header.IPv4MinimumSize || header.IPVersion(b) != 4 {
		return false
	}
	ip := header.IPv4(b)
	if !ip.IsValid(len(b)) || ip.Protocol() != uint8(header.ICMPv4ProtocolNumber) {
		return false
	}
	if ip.DestinationAddress() != tcpip.AddrFrom4(dst.As4()) {
		return false
	}
	icmp := header.ICMPv4(ip.Payload())
	return len(icmp) >= header.ICMPv4MinimumSize && icmp.Type() == header.ICMPv4Echo
}

// makeEchoReply turns an echo request into its reply in place.
func makeEchoReply(b []byte) {
	ip := header.IPv4(b)
	src, dst := ip.SourceAddress(), ip.DestinationAddress()
	ip.SetSourceAddress(dst)
	ip.SetDestinationAddress(src)
	ip.SetChecksum(0)
	ip.SetChecksum(^ip.CalculateChecksum())
	icmp := header.ICMPv4(ip.Payload())
	icmp.SetType(header.ICMPv4EchoReply)
	icmp.SetChecksum(0)
	icmp.SetChecksum(^checksum.Checksum(icmp, 0))
}

func TestCreateErrors(t *testing.T) {
	requireRoot(t)
	ns, nsPath := newNetns(t)
	name := "vrt" + randHex(t, 3)
	f, err := CreateInNetns(nsPath, name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, dup := range []string{name, "lo"} {
		if g, err := CreateInNetns(nsPath, dup); err == nil || !strings.Contains(err.Error(), "already exists") {
			if g != nil {
				g.Close()
			}
			t.Fatalf("CreateInNetns(%s) again: %v", dup, err)
		}
	}
	// A persistent TUN of that name must not be silently re-attached.
	pers := "vrp" + randHex(t, 3)
	if out, err := exec.Command("ip", "-n", ns, "tuntap", "add", "dev", pers, "mode", "tun").CombinedOutput(); err != nil {
		t.Fatalf("ip tuntap add: %v: %s", err, out)
	}
	if g, err := CreateInNetns(nsPath, pers); err == nil || !strings.Contains(err.Error(), "already exists") {
		if g != nil {
			g.Close()
		}
		t.Fatalf("CreateInNetns over a persistent TUN: %v", err)
	}
	if _, err := CreateInNetns("/proc/self/ns/uts", "vrx0"); err == nil || !strings.Contains(err.Error(), "not a network namespace") {
		t.Fatalf("uts namespace: %v", err)
	}
}

func TestRemove(t *testing.T) {
	requireRoot(t)
	leaktest.Check(t)
	ns, nsPath := newNetns(t)
	name := "vrt" + randHex(t, 3)
	f, err := CreateInNetns(nsPath, name)
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := OpenPort(f, 1390)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	readErr := make(chan error, 1)
	go func() {
		bufs := [][]byte{make([]byte, 65535+router.Headroom)}
		for range 1000 { // bounded: the device is idle, so it never loops far
			if _, err := p.Read(bufs, []int{0}, router.Headroom); err != nil {
				readErr <- err
				return
			}
		}
		readErr <- nil
	}()
	if err := Remove(nsPath, name); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if linkExists(ns, name) {
		t.Fatal("link still there after Remove")
	}
	select {
	case err := <-readErr:
		if err == nil {
			t.Fatal("reader stopped without an error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read still blocked after the link was removed")
	}
	if err := Remove(nsPath, name); err == nil {
		t.Fatal("second Remove succeeded")
	}
}

// TestCloseUnblocksRead: router.Port's contract that Close ends a blocked
// Read with os.ErrClosed.
func TestCloseUnblocksRead(t *testing.T) {
	requireRoot(t)
	leaktest.Check(t)
	ns, nsPath := newNetns(t)
	name := "vrt" + randHex(t, 3)
	f, err := CreateInNetns(nsPath, name)
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := OpenPort(f, 1390)
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	readErr := make(chan error, 1)
	go func() {
		close(started)
		bufs := make([][]byte, p.BatchSize())
		for i := range bufs {
			bufs[i] = make([]byte, 65535+router.Headroom)
		}
		_, err := p.Read(bufs, make([]int, len(bufs)), router.Headroom)
		readErr <- err
	}()
	<-started
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-readErr:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Read after Close = %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read still blocked after Close")
	}
	waitLinkGone(t, ns, name)
}

const helperEnv = "VRTEST_UNPRIV_PORT"

// TestUnprivilegedPort hands a TUN made in a namespace to a copy of this
// test binary running as nobody (as the daemon does) and has it answer a
// ping: OpenPort, TUNSETOFFLOAD and I/O must all work without privileges
// and across namespaces.
func TestUnprivilegedPort(t *testing.T) {
	if os.Getenv(helperEnv) == "1" {
		return // the helper's own run of this test name; see TestMain
	}
	requireRoot(t)
	ns, nsPath := newNetns(t)
	name := "vrt" + randHex(t, 3)
	f, err := CreateInNetns(nsPath, name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Configure(nsPath, name, testCfg); err != nil {
		t.Fatal(err)
	}

	// go test's build directory is private to root: copy the binary where
	// nobody can execute it.
	dir, err := os.MkdirTemp("", "vrtest-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "tunnel.test")
	copyFile(t, os.Args[0], bin)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	helper := exec.CommandContext(ctx, "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
		bin, "-test.run=^TestUnprivilegedPort$", "-test.v")
	helper.Env = append(os.Environ(), helperEnv+"=1")
	helper.ExtraFiles = []*os.File{f}
	out := &strings.Builder{}
	helper.Stdout, helper.Stderr = out, out
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close() // the helper holds the only descriptor now

	ping := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "ping", "-c1", "-W10", "10.240.0.9")
	pingOut, pingErr := ping.CombinedOutput()
	helperErr := helper.Wait()
	if helperErr != nil {
		t.Fatalf("helper: %v\n%s", helperErr, out)
	}
	if pingErr != nil {
		t.Fatalf("ping via the unprivileged port: %v\n%s\nhelper: %s", pingErr, pingOut, out)
	}
	t.Logf("helper:\n%s", out)
	// The helper exited, closing the last descriptor.
	waitLinkGone(t, ns, name)
}

// TestMain lets the test binary act as the unprivileged helper of
// TestUnprivilegedPort.
func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(unprivHelper())
	}
	os.Exit(m.Run())
}

func unprivHelper() int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "helper: "+format+"\n", args...)
		return 1
	}
	if os.Geteuid() == 0 {
		return fail("running as root; expected nobody")
	}
	f := os.NewFile(3, "tun")
	if _, err := DevNetnsID(f); err == nil {
		return fail("DevNetnsID succeeded without CAP_NET_ADMIN")
	} else {
		fmt.Printf("DevNetnsID unprivileged: %v\n", err)
	}
	p, info, err := OpenPort(f, 1390)
	if err != nil {
		return fail("OpenPort: %v", err)
	}
	defer p.Close()
	if _, ok := p.(router.OffloadPort); !info.VnetHdr || !ok {
		return fail("info %+v port %T: offloads not set up", info, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := answerOnePing(ctx, p, netip.MustParseAddr("10.240.0.9")); err != nil {
		return fail("answer ping: %v", err)
	}
	fmt.Printf("answered a ping as uid %d on %s\n", os.Geteuid(), info.Name)
	return 0
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestThreadsStayHome creates TUNs from many goroutines and then checks
// that no thread of the process is left in a foreign namespace, the main
// thread included (it cannot exit; see CreateInNetns).
func TestThreadsStayHome(t *testing.T) {
	requireRoot(t)
	home, err := NetnsID("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	_, nsPath := newNetns(t)
	errs := make(chan error, 16)
	for i := range 16 {
		go func() {
			f, err := CreateInNetns(nsPath, fmt.Sprintf("vrs%d", i))
			if err == nil {
				f.Close()
			}
			errs <- err
		}()
	}
	for range 16 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		stray := strayThreads(t, home)
		if len(stray) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("threads still in a foreign namespace: %v", stray)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func strayThreads(t *testing.T, home string) []string {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var stray []string
	for _, task := range tasks {
		id, err := NetnsID("/proc/self/task/" + task.Name() + "/ns/net")
		if err != nil {
			continue // the thread exited meanwhile
		}
		if id != home {
			stray = append(stray, task.Name()+"="+id)
		}
	}
	return stray
}
