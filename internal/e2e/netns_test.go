//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/internal/poll"
)

const cmdTimeout = 30 * time.Second

// runID keeps namespace names of concurrent runs (another engineer's `make
// test`) apart, so that cleanup only ever touches this run's namespaces.
var (
	runID     = randomHex(3)
	netnsSeq  atomic.Int64
	netnsRoot = "/run/netns/"
)

// netns is a network namespace made by a test; it stands for a container.
type netns struct {
	name string
	path string
}

// newNetns creates a namespace named vre2e-<run>-cN and deletes it in the
// test's cleanup.
func newNetns(t *testing.T) *netns {
	t.Helper()
	n := &netns{name: fmt.Sprintf("vre2e-%s-c%d", runID, netnsSeq.Add(1))}
	n.path = netnsRoot + n.name
	if out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", n.name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", n.name, err, out)
		}
		// attach --write-resolv-conf may have written the namespace's
		// resolv.conf; ip netns del leaves /etc/netns/NAME behind.
		if err := os.RemoveAll("/etc/netns/" + n.name); err != nil {
			t.Errorf("remove /etc/netns/%s: %v", n.name, err)
		}
	})
	return n
}

// command returns `ip netns exec NAME args...`, bound to ctx.
func (n *netns) command(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.name}, args...)...)
}

// run runs args inside the namespace with a timeout and returns the
// combined output.
func (n *netns) run(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := n.command(ctx, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in %s: %s: %w", n.name, strings.Join(args, " "), err)
	}
	return string(out), nil
}

// mustRun is run that fails the test on error.
func (n *netns) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := n.run(cmdTimeout, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return out
}

// ipJSON runs `ip -n NAME -j ARGS` and decodes its output into v.
func (n *netns) ipJSON(args []string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"-n", n.name, "-j"}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("ip -n %s %s: %w: %s", n.name, strings.Join(args, " "), err, ee.Stderr)
		}
		return fmt.Errorf("ip -n %s %s: %w", n.name, strings.Join(args, " "), err)
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("ip -n %s %s: decode %q: %w", n.name, strings.Join(args, " "), out, err)
	}
	return nil
}

// ipLink is the part of `ip -j -s link` / `ip -j addr` the tests read.
type ipLink struct {
	Ifname   string   `json:"ifname"`
	Flags    []string `json:"flags"`
	MTU      int      `json:"mtu"`
	AddrInfo []struct {
		Family    string `json:"family"`
		Local     string `json:"local"`
		Prefixlen int    `json:"prefixlen"`
	} `json:"addr_info"`
	Stats64 struct {
		RX struct {
			Packets uint64 `json:"packets"`
		} `json:"rx"`
		TX struct {
			Packets uint64 `json:"packets"`
		} `json:"tx"`
	} `json:"stats64"`
}

func (l ipLink) up() bool { return slices.Contains(l.Flags, "UP") }

// links lists the namespace's interfaces with addresses and counters.
func (n *netns) links(t *testing.T) []ipLink {
	t.Helper()
	var addrs, stats []ipLink
	if err := n.ipJSON([]string{"addr", "show"}, &addrs); err != nil {
		t.Fatal(err)
	}
	if err := n.ipJSON([]string{"-s", "link", "show"}, &stats); err != nil {
		t.Fatal(err)
	}
	for i := range addrs {
		for _, s := range stats {
			if s.Ifname == addrs[i].Ifname {
				addrs[i].Stats64 = s.Stats64
			}
		}
	}
	return addrs
}

// linkNames lists the names of the namespace's interfaces.
func (n *netns) linkNames(t *testing.T) []string {
	t.Helper()
	var names []string
	for _, l := range n.links(t) {
		names = append(names, l.Ifname)
	}
	return names
}

// link returns the interface called name, if there is one.
func (n *netns) link(t *testing.T, name string) (ipLink, bool) {
	t.Helper()
	for _, l := range n.links(t) {
		if l.Ifname == name {
			return l, true
		}
	}
	return ipLink{}, false
}

// rxPackets is how many packets the daemon has written into the
// namespace's TUN (the kernel counts them as received).
func (n *netns) rxPackets(t *testing.T, ifname string) uint64 {
	t.Helper()
	l, ok := n.link(t, ifname)
	if !ok {
		t.Fatalf("%s: no interface %s", n.name, ifname)
	}
	return l.Stats64.RX.Packets
}

// waitLinkGone polls until the interface has left the namespace.
func (n *netns) waitLinkGone(t *testing.T, ifname string, timeout time.Duration) {
	t.Helper()
	poll.UntilNil(t, timeout, n.name+": "+ifname+" gone", func() error {
		if _, ok := n.link(t, ifname); ok {
			return fmt.Errorf("%s still present (links %v)", ifname, n.linkNames(t))
		}
		return nil
	})
}

// ipRoute is the part of `ip -j route` the tests read.
type ipRoute struct {
	Dst string `json:"dst"`
	Dev string `json:"dev"`
}

func (n *netns) routes(t *testing.T) []ipRoute {
	t.Helper()
	var rs []ipRoute
	if err := n.ipJSON([]string{"route", "show"}, &rs); err != nil {
		t.Fatal(err)
	}
	return rs
}

// waitListening polls `ss` until something listens on port (proto "t" for
// TCP, "u" for UDP) inside the namespace, so a client never races the
// server's bind.
func (n *netns) waitListening(t *testing.T, proto string, port int) {
	t.Helper()
	poll.UntilNil(t, 10*time.Second, fmt.Sprintf("%s listening on %s/%d", n.name, proto, port), func() error {
		out, err := n.run(cmdTimeout, "ss", "-Hln"+proto, fmt.Sprintf("sport = :%d", port))
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) == "" {
			return errors.New("no socket yet")
		}
		return nil
	})
}

// openIsolatedTUNs creates count TUN devices called name, each in a network
// namespace of its own that lives as long as the device (the TUN holds it;
// nothing is mounted). It stands in for a container engine that opens the
// TUNs itself and uses `attach --fd`, without the cost of count named
// namespaces. The fds are closed in the test's cleanup, concurrently: the
// kernel takes ~20 ms to unregister one TUN but overlaps parallel closes.
func openIsolatedTUNs(t *testing.T, name string, count int) []*os.File {
	t.Helper()
	files, err := openIsolatedTUNsErr(name, count)
	t.Cleanup(func() { closeAll(files) })
	if err != nil {
		t.Fatalf("open %d TUNs: %v", count, err)
	}
	return files
}

func closeAll(files []*os.File) {
	var wg sync.WaitGroup
	for _, f := range files {
		wg.Go(func() { f.Close() })
	}
	wg.Wait()
}

func openIsolatedTUNsErr(name string, count int) (files []*os.File, err error) {
	// A thread in another namespace must never serve other goroutines: it
	// goes back to the pool only after setns has brought it home, otherwise
	// it dies with this goroutine.
	runtime.LockOSThread()
	home, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("own netns: %w", err)
	}
	defer home.Close()
	defer func() {
		if serr := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); serr != nil {
			err = errors.Join(err, fmt.Errorf("setns back home: %w", serr))
			return
		}
		runtime.UnlockOSThread()
	}()
	for range count {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return files, fmt.Errorf("unshare netns: %w", err)
		}
		f, err := openTUN(name)
		if err != nil {
			return files, err
		}
		files = append(files, f)
	}
	return files, nil
}

func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "tun:"+name), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// newID returns a fresh network ("pn") or app ("ap") id: prefix + lower-case
// UUIDv4.
func newID(prefix string) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	x := hex.EncodeToString(b)
	return fmt.Sprintf("%s-%s-%s-%s-%s-%s", prefix, x[0:8], x[8:12], x[12:16], x[16:20], x[20:32])
}
